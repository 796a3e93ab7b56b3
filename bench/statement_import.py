"""Benchmark: an M-Pesa statement of 100,000 rows, half of them already in the book, imported
with the real `flask payments import-statement` (issue #15).

Not a test: it prints figures. Set-up (not timed): a fresh bench database (PostgreSQL with
--database-url, else a SQLite file), `flask db upgrade`, `payments add-shortcode`, the real
`lenders import-loans` of a generated book of --loans loans, and the first half of the
statement's customer payments stored as callbacks store them and posted by the payments
drain (its rate is printed too: the drain in batches). The statement (CSV, the portal's
layout: preamble, newest first, day-first times, thousands separators, money out negative)
holds --rows rows: customer payments (exact and sloppy loan numbers, payers masked as
Daraja masks them, strangers), a share of organisation transfers, charges, settlements,
B2C payouts and failed rows, and reversals of payments already posted.

Timed, each a process of its own, start-up included (REDIS_URL points at a private
redis-server, so a wake-up is a push and nothing runs inline):

1. **summary**: `flask payments import-statement FILE` until it exits with its JSON summary
   (reading, classifying, deduplicating, storing the lines and the gaps). Goal: < 10 s.
2. **posting**: `flask jobs run payments reversals` (--workers of them at once), the
   drains a worker runs, until every
   gap is matched and posted (or left unmatched for an officer) and every reversal applied.
   Goal: < 30 s. The receipts it queues are sent by the messages drain, not timed here.

Then the book is checked: no payment waits in `received`, no reversal in `pending`, each
payment posted once, the summary's money agrees with the file's.

    .venv/bin/python bench/statement_import.py                     # SQLite
    .venv/bin/python bench/statement_import.py --rows 20000        # a quick look
    .venv/bin/python bench/statement_import.py --database-url postgresql+psycopg://mj:mj@127.0.0.1/mj_bench

The PostgreSQL database's public schema is DROPPED and recreated (its name must contain
"bench" unless --allow-any-database)."""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import benchlib as bl
from confirmations import start_redis, stop

from payments.emulator.statement import HEADER as STATEMENT_HEADER

SHORTCODE = "600984"
GOAL_SUMMARY, GOAL_POSTING = 10.0, 30.0
HEADER = list(STATEMENT_HEADER)  # the org portal's 13 columns, as the emulator writes them
OTHERS = (  # reason type, share of the rows, money out?
    ("Organization Funds Transfer", 0.005, False),
    ("Pay Bill Charge", 0.005, True),
    ("Withdraw Funds to Bank", 0.002, True),
    ("Business Payment to Customer via API", 0.003, True),
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL instead of SQLite")
    parser.add_argument("--rows", type=int, default=100_000, help="statement rows (100,000)")
    parser.add_argument("--recorded", type=float, default=0.5, help="share already recorded")
    parser.add_argument("--reversals", type=float, default=0.002, help="share reversed")
    parser.add_argument("--loans", type=int, default=20_000, help="loans in the book (20,000)")
    parser.add_argument("--workers", type=int, default=1, help="drain processes posting (1)")
    parser.add_argument("--seed", type=int, default=1501)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--allow-any-database", action="store_true")
    args = parser.parse_args(argv)
    bl.check_resettable(parser, args.database_url, args.allow_any_database)
    return args


def payers(url: str) -> list[tuple[str, str, str]]:
    """(loan number, borrower's first name, first phone) of every active loan."""
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT l.number, b.name, min(p.number) FROM loan l JOIN borrower b "
                "ON b.id = l.borrower_id JOIN borrower_phone p ON p.borrower_id = b.id "
                "WHERE l.status = 'active' GROUP BY l.number, b.name"
            )
        ).all()
    engine.dispose()
    return [(number, name.split()[0], phone) for number, name, phone in rows]


def statement(args, book) -> tuple[list[list[str]], list[dict], Decimal, Decimal]:
    """The statement's rows (oldest first), the confirmations of the recorded half, and the
    file's money in and out."""
    rng = random.Random(args.seed)
    start = datetime(2026, 10, 1, 6, 0, 0)
    others = {reason: int(args.rows * share) for reason, share, _ in OTHERS}
    reversals = int(args.rows * args.reversals)
    customers = args.rows - sum(others.values()) - reversals
    rows, bodies, money_in, money_out = [], [], Decimal(0), Decimal(0)
    posted = []
    for n in range(customers):
        number, first, phone = rng.choice(book)
        amount = Decimal(rng.randrange(50, 20_000))
        when = start + timedelta(seconds=25 * n)
        receipt = f"UB{n:08d}"
        account = bl.sloppy_reference(number, rng) if rng.random() < 0.9 else ""
        masked = (
            f"{phone[:4]}****{phone[-4:]}" if rng.random() < 0.5 else bl.masked_msisdn(phone, rng)
        )
        rows.append(
            [
                receipt,
                when,
                "Pay Bill Online",
                f"{amount:,.2f}",
                "",
                "Completed",
                f"{masked} - {first.upper()}",
                "",
                account,
            ]
        )
        money_in += amount
        if rng.random() < args.recorded:
            bodies.append(
                {
                    "TransactionType": "Pay Bill",
                    "TransID": receipt,
                    "TransTime": when.strftime("%Y%m%d%H%M%S"),
                    "TransAmount": f"{amount:.2f}",
                    "BusinessShortCode": SHORTCODE,
                    "BillRefNumber": account,
                    "MSISDN": masked,
                    "FirstName": first.upper(),
                }
            )
            posted.append((receipt, amount, when))
    for reason, count in others.items():
        out = next(o for r, _, o in OTHERS if r == reason)
        for n in range(count):
            amount = Decimal(rng.randrange(10, 100_000))
            when = start + timedelta(seconds=rng.randrange(25 * customers))
            party = "600111 - Demo Lender Ltd" if not out else "Bank"
            cells = ["", f"-{amount:,.2f}"] if out else [f"{amount:,.2f}", ""]
            rows.append(
                [f"UO{reason[:2].upper()}{n:06d}", when, reason, *cells, "Completed", party, "", ""]
            )
            money_in, money_out = (
                money_in + (0 if out else amount),
                money_out + (amount if out else 0),
            )
    for n, (receipt, amount, when) in enumerate(rng.sample(posted, min(reversals, len(posted)))):
        rows.append(
            [
                f"UR{n:08d}",
                when + timedelta(hours=2),
                "Reversal",
                "",
                f"-{amount:,.2f}",
                "Completed",
                "254700000000 - CUSTOMER",
                receipt,
                "",
            ]
        )
        money_out += amount
    rows.sort(key=lambda r: r[1], reverse=True)  # newest first, as the portal writes it
    return rows, bodies, money_in, money_out


def write(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as stream:
        out = csv.writer(stream)
        out.writerows([["Organization Name", "Bench Lender"], ["Paybill", SHORTCODE], []])
        out.writerow(HEADER)
        for receipt, when, reason, paid_in, withdrawn, status, party, linked, account in rows:
            stamp = when.strftime("%d-%m-%Y %H:%M:%S")
            out.writerow(
                [
                    receipt,
                    stamp,
                    stamp,
                    reason,
                    status,
                    paid_in,
                    withdrawn,
                    "",
                    "TRUE",
                    reason,
                    party,
                    linked,
                    account,
                ]
            )


def record_half(url: str, bodies: list[dict], redis_url: str) -> float:
    """Store the recorded half as callbacks do and post it with the payments drain; the
    drain's seconds."""
    bl.use_app_env(url)
    from app import create_app
    from lenders.extensions import db
    from lenders.jobs import run_drains
    from payments import intake
    from payments.models import Shortcode

    app = create_app({"JOBS_IN_BACKGROUND": False, "REDIS_URL": redis_url})
    with app.app_context():
        shortcode = db.session.query(Shortcode).one()
        for n, body in enumerate(bodies):
            intake.record_confirmation(
                db.session.connection(),
                shortcode,
                json.dumps(body).encode(),
                source_ip=None,
                headers={},
            )
            if n % 5000 == 4999:
                db.session.commit()
        db.session.commit()
        started = time.perf_counter()
        run_drains(app, ["payments"])
        seconds = time.perf_counter() - started
        db.session.remove()
        db.engine.dispose()
    return seconds


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(env: dict, *args: str, timeout: float) -> tuple[float, dict | None]:
    """Run a flask command; its wall seconds and the JSON object it printed, if any."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=bl.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"flask {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    found = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return seconds, (json.loads(found[-1]) if found else None)


def drained_by(env: dict, workers: int, timeout: float) -> float:
    """``workers`` processes of `flask jobs run payments reversals` at once (a worker's
    drains; PostgreSQL's claims skip what another holds); seconds until the last exits."""
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "app",
        "jobs",
        "run",
        "payments",
        "reversals",
    ]
    running = [
        subprocess.Popen(
            command, cwd=bl.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    for process in running:
        if process.wait(timeout=timeout) != 0:
            raise SystemExit(f"flask jobs run exited {process.returncode}")
    return time.perf_counter() - started


MISPOSTED = (
    "SELECT count(*) FROM c2b_payment p WHERE p.status = 'posted' AND p.amount <> ("
    "SELECT coalesce(sum(r.amount + r.to_credit), 0) FROM payment_repayment pr "
    "JOIN repayment r ON r.id = pr.repayment_id "
    "WHERE pr.payment_id = p.id AND r.reversed_at IS NULL)"
)


def check(url: str) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    with engine.connect() as c:
        found = {
            "statuses": dict(
                c.execute(text("SELECT status, count(*) FROM c2b_payment GROUP BY 1")).all()
            ),
            "pending_reversals": c.execute(
                text("SELECT count(*) FROM statement_line WHERE outcome = 'pending'")
            ).scalar(),
            # posted payments whose live repayments do not add up to the payment (once each)
            "misposted": c.execute(text(MISPOSTED)).scalar(),
            "lines": c.execute(text("SELECT count(*) FROM statement_line")).scalar(),
        }
    engine.dispose()
    return found


def main(argv=None) -> int:
    args = parse_args(argv or sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="bench-statement-"))
    url = args.database_url or f"sqlite:///{work / 'bench.db'}"
    env = bl.app_env(url)
    print(f"checkout under test: {bl.ROOT} ({bl.describe_checkout()})")
    print(f"load average: {bl.load_average()}")
    bl.fresh_schema(url)
    bl.flask(env, "payments", "add-shortcode", SHORTCODE, "--name", "Bench paybill")
    bl.write_small_book(work / "book.csv", args.loans, args.seed)
    bl.flask(env, "lenders", "import-loans", str(work / "book.csv"), timeout=args.timeout)
    rows, bodies, money_in, money_out = statement(args, payers(url))
    path = work / "statement.csv"
    write(path, rows)
    print(
        f"  statement: {len(rows):,} rows, {path.stat().st_size / 2**20:.1f} MB; "
        f"{len(bodies):,} customer payments recorded first"
    )
    redis = start_redis(work)
    if redis is None:
        print("redis-server is not installed: the drains would run inside the import command")
        return 1
    env["REDIS_URL"] = redis[1]  # wake-ups only: the posting is timed in a process of its own
    cpu = {}
    try:
        drained = record_half(url, bodies, redis[1])
        print(
            f"  set-up: the recorded half posted by the payments drain in {drained:.1f} s "
            f"({len(bodies) / drained:,.0f} payments/s, one process, receipts not sent)"
        )
        before = children_cpu()
        summary_at, summary = timed(
            env,
            "payments",
            "import-statement",
            str(path),
            "--shortcode",
            SHORTCODE,
            timeout=args.timeout,
        )
        cpu["summary"], before = children_cpu() - before, children_cpu()
        posting = drained_by(env, args.workers, args.timeout)
        cpu["posting"] = children_cpu() - before
    finally:
        stop(redis[0])
    if summary is None:
        print("import-statement printed no summary")
        return 1
    found = check(url)
    agrees = Decimal(summary["paid_in"]) == money_in and Decimal(summary["withdrawn"]) == money_out
    gaps = summary["gaps_filled"]
    print()
    bl.print_table(
        ("phase", "seconds", "CPU s", "rate", "goal", "result"),
        [
            (
                "summary (read, classify, dedupe, store)",
                f"{summary_at:.1f}",
                f"{cpu['summary']:.1f}",
                f"{len(rows) / summary_at:,.0f} rows/s",
                f"< {GOAL_SUMMARY:.0f} s",
                "PASS" if summary_at < GOAL_SUMMARY else "FAIL",
            ),
            (
                "gaps matched and posted, reversals applied",
                f"{posting:.1f}",
                f"{cpu['posting']:.1f}",
                f"{gaps / posting:,.0f} gaps/s",
                f"< {GOAL_POSTING:.0f} s",
                "PASS" if posting < GOAL_POSTING else "FAIL",
            ),
        ],
    )
    print(
        f"\n  summary: rows {summary['rows']:,}, "
        f"already recorded {summary['already_recorded']:,}, gaps {gaps:,} "
        f"(KES {Decimal(summary['gaps_amount']):,.2f}), reversals {summary['reversals']}, "
        f"review {summary['review']}, not repayments {summary['not_repayments']}"
    )
    print(
        f"  money agrees with the file to the cent: {'yes' if agrees else 'NO'} "
        f"(in {money_in:,.2f}, out {money_out:,.2f})"
    )
    print(
        f"  after: payments by status {found['statuses']}, reversals pending "
        f"{found['pending_reversals']}, statement lines {found['lines']:,}, posted payments "
        f"whose repayments do not add up to them: {found['misposted']}"
    )
    ok = agrees and "received" not in found["statuses"] and not found["pending_reversals"]
    ok = ok and not found["misposted"]
    fast = summary_at < GOAL_SUMMARY and posting < GOAL_POSTING
    print(
        f"SUMMARY {'PASS' if ok and fast else 'FAIL'} summary {summary_at:.1f} s, "
        f"posting {posting:.1f} s, load {bl.load_average()}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
