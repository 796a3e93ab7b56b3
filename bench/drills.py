"""The drills at length: the production shape under faults, as tests/drills/test_drills.py
runs them in CI in short form, with the issue's durations (Redis down 30 s, PostgreSQL down
45 s, a job worker killed every few seconds) and a longer stream.

Not a test: it prints the figures and the verdict. Needs PostgreSQL (a database whose name
contains "bench"; its public schema is DROPPED and recreated) and a Redis server.

    .venv/bin/python bench/drills.py --database-url postgresql+psycopg://mj:mj@127.0.0.1/mj_bench \\
        --redis-url redis://127.0.0.1:6379/9
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

sys.path.insert(0, str(bl.ROOT))
sys.path.insert(0, str(bl.ROOT / "tests"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--loans", type=int, default=300)
    parser.add_argument("--rate", type=float, default=40.0, help="confirmations a second")
    parser.add_argument("--kills", type=int, default=10, help="job workers killed (-9)")
    parser.add_argument("--redis-down", type=float, default=30.0)
    parser.add_argument("--postgres-down", type=float, default=45.0)
    parser.add_argument("--allow-any-database", action="store_true")
    args = parser.parse_args(argv)
    bl.check_resettable(parser, args.database_url, args.allow_any_database)
    url = bl.normalise_url(args.database_url)
    bl.fresh_schema(url)
    bl.use_app_env(url)

    from app import create_app
    from lenders.extensions import db
    from tests.drills.harness import Stack, Timeline, run_drill
    from tests.drills.test_drills import lender

    app = create_app({"JOBS_IN_BACKGROUND": False})
    with app.app_context():
        token, loans = lender(args.loans)
        db.session.remove()
        db.engine.dispose()
    workdir = Path(tempfile.mkdtemp(prefix="marejesho-drills-"))
    plan = Timeline(
        worker_kills=args.kills,
        redis_down=args.redis_down,
        postgres_down=args.postgres_down,
        rate=args.rate,
        settle=120.0,
    )
    print(f"load average: {bl.load_average()}; logs in {workdir}")
    started = time.monotonic()
    stack = Stack(url, args.redis_url, workdir).start()
    try:
        figures = run_drill(stack, loans, token, plan, say=lambda s: print(f"  {s}"))
    finally:
        stack.stop()
    figures["seconds"] = round(time.monotonic() - started)
    print(json.dumps(figures, indent=2))
    settled = figures["seconds_from_postgres_back_to_settled"]
    clean = not figures["problems"] and figures["job_worker_restarts_by_harness"] == 0
    verdict = "PASS" if clean and settled < 60 else "FAIL"
    print(f"SUMMARY drills: {figures['acknowledged']:,} acknowledged, problems "
          f"{figures['problems'] or 'none'}; settled {settled} s after PostgreSQL came back "
          f"(goal < 60 s): {verdict}")  # fmt: skip
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
