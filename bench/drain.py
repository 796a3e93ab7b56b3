"""Benchmark: a backlog of received payments drained by the job workers (production shape).

Not a test: it prints figures. Set-up (not timed): a fresh bench database (PostgreSQL with
--database-url, else a SQLite file), `flask db upgrade`, `payments add-shortcode`, and the
real `lenders import-loans` of a generated book of --loans loans. Then, phase by phase, a
backlog of --payments confirmations is stored as the callback stores them (all `received`;
the same mix of bodies as bench/confirmations.py: exact and sloppy loan numbers, IDs and
phones as account, masked/hashed/plain MSISDNs, strangers):

1. **backlog**: `flask jobs worker --processes 2` (REDIS_URL: a private redis-server) drains
   it; timed until no payment waits in `received` and no message in `queued`/`sending`.
   Goal: 10,000 in under 30 s, every receipt handed to the provider once.
2. **posting CPU**: one process, `flask jobs run payments`, posts another backlog; its CPU
   time (user + system, from the kernel) per payment, receipt rows written, sending not
   included. Goal: <= 2 ms.
3. **memory** (--rss N): one worker process posts and sends N payments in rounds of
   --payments; its RSS after the first round and at the end. Goal: < 10 % growth.

    .venv/bin/python bench/drain.py --database-url postgresql+psycopg://mj:mj@127.0.0.1/mj_bench
    .venv/bin/python bench/drain.py --database-url … --payments 10000 --rss 100000
    .venv/bin/python bench/drain.py                        # SQLite (embedded default's file)

The PostgreSQL database's public schema is DROPPED and recreated (its name must contain
"bench"). The console SMS provider "sends" (it logs); a real provider's latency is not here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
from confirmations import SHORTCODE, Bodies, load_payers, start_redis

GOAL_BACKLOG_SECONDS = 30.0
GOAL_CPU_MS = 2.0
GOAL_RSS_GROWTH = 0.10


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL instead of SQLite")
    parser.add_argument("--loans", type=int, default=3000, help="loans imported (3000)")
    parser.add_argument("--payments", type=int, default=10_000, help="backlog size (10,000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--rss", type=int, default=0, help="payments for the memory phase")
    parser.add_argument("--seed", type=int, default=600984)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--allow-any-database", action="store_true")
    args = parser.parse_args(argv)
    bl.check_resettable(parser, args.database_url, args.allow_any_database)
    return args


def store_backlog(url: str, bodies: Bodies, count: int) -> float:
    """``count`` confirmations stored as the callback stores them, left in ``received``."""
    bl.use_app_env(url)
    os.environ.pop("REDIS_URL", None)
    from app import create_app
    from lenders.extensions import db
    from payments.callbacks import find_shortcode
    from payments.intake import Kept, store_confirmations

    app = create_app({"JOBS_IN_BACKGROUND": False})
    started = time.perf_counter()
    with app.app_context():
        from sqlalchemy import select

        from payments.models import Shortcode

        token = db.session.scalar(select(Shortcode.callback_token))
        shortcode = find_shortcode(token)
        for start in range(0, count, 500):  # as the journal's shipper stores them
            size = min(500, count - start)
            batch = [Kept(shortcode, bodies.next()[1], "127.0.0.1", {}) for _ in range(size)]
            store_confirmations(db.session, batch)
            db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return time.perf_counter() - started


def waiting(url: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    with engine.connect() as connection:
        received = connection.execute(
            text("SELECT count(*) FROM c2b_payment WHERE status = 'received'")
        ).scalar()
        queued = connection.execute(
            text("SELECT count(*) FROM sms_message WHERE status IN ('queued', 'sending')")
        ).scalar()
    engine.dispose()
    return received, queued


def figures(url: str) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    with engine.connect() as c:
        statuses = dict(
            c.execute(text("SELECT status, count(*) FROM c2b_payment GROUP BY 1")).all()
        )
        receipts = dict(
            c.execute(text("SELECT status, count(*) FROM sms_message GROUP BY 1")).all()
        )
        twice = c.execute(
            text("SELECT count(*) FROM sms_message WHERE attempts > 1 AND status = 'sent'")
        ).scalar()
        per_payment = c.execute(
            text(
                "SELECT count(*) FROM (SELECT payment_id FROM sms_message WHERE kind = 'receipt'"
                " GROUP BY payment_id HAVING count(*) > 1) doubled"
            )
        ).scalar()
    engine.dispose()
    return {"payments": statuses, "messages": receipts, "sent_twice": twice + per_payment}


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live children, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain_with_workers(env: dict, url: str, workers: int, timeout: float) -> tuple[float, float]:
    """Start ``flask jobs worker --processes N``; seconds until nothing waits, and the
    workers' CPU seconds."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "app",
            "jobs",
            "worker",
            "--processes",
            str(workers),
        ],  # fmt: skip
        cwd=bl.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.perf_counter()
    try:
        cpu = 0.0
        while time.perf_counter() - started < timeout:
            cpu = max(cpu, process_tree_cpu(worker.pid))
            if waiting(url) == (0, 0):
                cpu = max(cpu, process_tree_cpu(worker.pid))
                return time.perf_counter() - started, cpu
            time.sleep(0.2)
        raise SystemExit(f"the backlog did not drain in {timeout:.0f} s: {waiting(url)}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"checkout under test: {bl.ROOT} ({bl.describe_checkout()})")
    print(f"load average: {bl.load_average()}")
    workdir = Path(tempfile.mkdtemp(prefix="marejesho-drain-"))
    redis = None
    try:
        url = (
            bl.normalise_url(args.database_url)
            if args.database_url
            else f"sqlite:///{workdir / 'marejesho.db'}"
        )
        backend = "postgresql" if args.database_url else "sqlite"
        env = bl.app_env(url)
        bl.fresh_schema(url)
        bl.flask(env, "payments", "add-shortcode", SHORTCODE, "--name", "Bench")
        book = workdir / "book.csv"
        bl.write_small_book(book, args.loans, args.seed)
        print("  " + bl.flask(env, "lenders", "import-loans", str(book)).strip())
        bodies = Bodies(load_payers(url), args.seed)
        redis = start_redis(workdir)
        if redis:
            env["REDIS_URL"] = redis[1]
        results = {}

        bodies.start_run("A")
        took = store_backlog(url, bodies, args.payments)
        print(f"\n[backlog] {args.payments:,} stored in {took:.1f} s; "
              f"{args.workers} worker process(es) draining")  # fmt: skip
        seconds, cpu = drain_with_workers(env, url, args.workers, args.timeout)
        done = figures(url)
        results["backlog"] = (seconds, cpu, done)
        results["backlog"] = (seconds, cpu, done)
        print(f"  drained in {seconds:.1f} s ({args.payments / seconds:,.0f} payments/s), "
              f"workers' CPU {cpu:.1f} s ({cpu / args.payments * 1000:.2f} ms per payment, "
              f"posting and sending)")  # fmt: skip
        print(f"  payments {done['payments']}, messages {done['messages']}, "
              f"handed to the provider more than once: {done['sent_twice']}")  # fmt: skip

        bodies.start_run("B")
        store_backlog(url, bodies, args.payments)
        print(f"\n[posting CPU] {args.payments:,} stored; one process posts them "
              "(flask jobs run payments)")  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        bl.flask(env, "jobs", "run", "payments", timeout=args.timeout)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        per = cpu / args.payments * 1000
        results["posting"] = per
        print(f"  {wall:.1f} s wall, {cpu:.1f} s CPU: {per:.2f} ms per payment "
              "(start-up of the command included)")  # fmt: skip

        if args.rss:
            rounds = max(1, args.rss // args.payments)
            print(f"\n[memory] {rounds} rounds of {args.payments:,}: one worker process")
            worker = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "app", "jobs", "worker"],
                cwd=bl.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            samples = []
            try:
                for n in range(rounds):
                    bodies.start_run(f"M{n:03d}"[-3:] if n < 26 else f"{n:03X}")
                    store_backlog(url, bodies, args.payments)
                    while waiting(url) != (0, 0):
                        time.sleep(0.5)
                    samples.append(rss_mb(worker.pid))
                    print(f"  round {n + 1}: RSS {samples[-1]:.1f} MB")
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
            growth = (samples[-1] - samples[0]) / samples[0]
            results["rss"] = (samples[0], samples[-1], growth)

        print(f"\nSUMMARY drain {backend}:")
        seconds, cpu, done = results["backlog"]
        verdict = "PASS" if seconds < GOAL_BACKLOG_SECONDS and not done["sent_twice"] else "FAIL"
        if args.payments < 10_000:
            verdict = "no goal below 10,000 payments"
        print(f"  backlog of {args.payments:,} with {args.workers} workers: {seconds:.1f} s "
              f"(goal < {GOAL_BACKLOG_SECONDS:.0f} s for 10,000): {verdict}")  # fmt: skip
        per = results["posting"]
        print(f"  posting CPU {per:.2f} ms per payment (goal <= {GOAL_CPU_MS} ms): "
              f"{'PASS' if per <= GOAL_CPU_MS else 'FAIL'}")  # fmt: skip
        if "rss" in results:
            first, last, growth = results["rss"]
            verdict = "PASS" if growth < GOAL_RSS_GROWTH else "FAIL"
            print(f"  worker RSS {first:.1f} MB -> {last:.1f} MB ({growth:+.1%}; goal < "
                  f"{GOAL_RSS_GROWTH:.0%}): {verdict}")  # fmt: skip
        print(json.dumps({"backend": backend, "payments": args.payments}))
        return 0
    finally:
        if redis:
            redis[0].terminate()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
