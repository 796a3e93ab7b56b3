"""Benchmark: `flask lenders import-loans` / `export-loans` on a realistic loan book.

Not a test: it prints figures. It generates a seeded, deterministic loan-book CSV in the
CONTRACT §6 format, then times the real commands end to end as subprocesses (interpreter and
app start-up included, the way a lender runs them):

    flask --app app db upgrade                 (not timed, fresh database)
    flask --app app lenders import-loans FILE  (timed; the goal: 100,000 loans in under 60 s)
    flask --app app lenders export-loans OUT   (timed; checked for N rows and matching totals)

on a fresh SQLite file in a temporary directory and, when a PostgreSQL URL is given
(``--postgres URL`` or MAREJESHO_BENCH_POSTGRES_URL), on PostgreSQL after resetting its
``public`` schema. Exits non-zero only when an import command fails.

    .venv/bin/python bench/import_loans.py                      # 100,000 loans on SQLite
    .venv/bin/python bench/import_loans.py --loans 20000 \\
        --postgres postgresql+psycopg://mj:mj@127.0.0.1/mj_bench
"""

from __future__ import annotations

import argparse
import csv
import os
import pstats
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import benchlib  # noqa: E402 (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
GOAL_LOANS, GOAL_SECONDS = 100_000, 60.0
HEADER = (
    "loan_number",
    "borrower_name",
    "national_id",
    "phone",
    "principal",
    "interest",
    "fees",
    "disbursed_on",
    "installments",
    "frequency",
    "amount_paid",
    "officer_email",
)
# A fixed "today" for the generator, so the file is the same whatever day it runs.
ANCHOR = date(2026, 11, 1)
CENT = Decimal("0.01")

FIRST_NAMES = benchlib.FIRST_NAMES  # one list of Kenyan first names for every benchmark
MIDDLE_NAMES = ("Wambui", "Njoki", "Auma", "Jepkoech", "Kerubo", "Muthoni", "Chepkemoi", "Anyango")
SURNAMES = [
    "Wanjiku",
    "Otieno",
    "Kamau",
    "Mwangi",
    "Ochieng",
    "Kiptoo",
    "Njoroge",
    "Wambui",
    "Mutiso",
    "Onyango",
    "Cherono",
    "Kariuki",
    "Nyambura",
    "Barasa",
    "Macharia",
    "Awuor",
    "Kimani",
    "Langat",
    "Muthoni",
    "Wafula",
    "Ng'ang'a",
    "Ruto",
    "Koech",
    "Odhiambo",
    "Maina",
    "Kiprotich",
    "Nyaga",
    "Mohamed",
    "Ali",
    "Abdi",
    "Wekesa",
    "Simiyu",
    "Okoth",
    "Achieng",
    "Karanja",
    "Mugo",
    "Gitau",
    "Kilonzo",
    "Mwende",
    "Nduta",
]
OFFICERS = (
    "wanjiru.kamau@bench.marejesho.test",
    "otieno.odhiambo@bench.marejesho.test",
    "chebet.langat@bench.marejesho.test",
    "mutua.kilonzo@bench.marejesho.test",
    "halima.abdi@bench.marejesho.test",
)
# Kenyan mobile prefixes after the 0: Safaricom 70x-72x, 74x, 757-759, 768-769, 79x, 110-115;
# Airtel 73x, 750-756, 78x, 100-102; Telkom 77x.
MOBILE_PREFIXES = (
    [f"7{n:02d}" for n in range(0, 30)]
    + [f"7{n}" for n in range(30, 40)]
    + [f"7{n}" for n in range(40, 47)]
    + [f"7{n}" for n in range(50, 60)]
    + ["768", "769"]
    + [f"7{n}" for n in range(70, 100)]
    + ["110", "111", "112", "113", "114", "115", "100", "101", "102"]
)


# ---------------------------------------------------------------------------------------------
# The loan book


@dataclass
class Book:
    """What was written, to check the export against."""

    loans: int = 0
    borrowers: int = 0
    installments: int = 0
    total_due: Decimal = Decimal(0)
    paid: Decimal = Decimal(0)
    paid_loans: int = 0
    closed_loans: int = 0
    two_phone_rows: int = 0
    borrowers_with_several_loans: int = 0


def _phone_form(rng: random.Random, national: str) -> str:
    """``national`` is the 9 digits after the 0 (``712345678``); render it as people type it."""
    pick = rng.random()
    if pick < 0.30:
        return f"0{national[:3]} {national[3:6]} {national[6:]}"  # 0712 345 678
    if pick < 0.55:
        return f"+254{national}"
    if pick < 0.75:
        return f"254{national}"
    if pick < 0.95:
        return f"0{national}"
    return f"+254 {national[:3]} {national[3:]}"  # +254 712 345678


def _people(rng: random.Random, loans: int) -> list[tuple[str, str, list[str]]]:
    """About 0.7 borrowers per loan: 68 % with one loan, 24 % with two, 8 % with three.
    Returns one (name, national_id, phones) entry per loan, shuffled through the file."""
    borrowers = max(1, round(loans / 1.40))
    ids = rng.sample(range(10_000_000, 39_999_999), borrowers)
    # Phones as 9 digits after the 0 (prefix + 6 digits), no two borrowers sharing one.
    numbers = rng.sample(range(len(MOBILE_PREFIXES) * 1_000_000), int(borrowers * 1.3) + 1)
    phone_iter = iter(numbers)

    def next_phone() -> str:
        n = next(phone_iter)
        return f"{MOBILE_PREFIXES[n // 1_000_000]}{n % 1_000_000:06d}"

    slots: list[tuple[str, str, list[str]]] = []
    for national_id in ids:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
        if rng.random() < 0.2:
            first, last = name.split(" ", 1)
            name = f"{first} {rng.choice(MIDDLE_NAMES)} {last}"
        phones = [next_phone()]
        if rng.random() < 0.25:
            phones.append(next_phone())
        pick = rng.random()
        count = 1 if pick < 0.68 else 2 if pick < 0.92 else 3
        slots.extend([(name, str(national_id), phones)] * count)
    # Trim or pad to exactly `loans` rows, then scatter a borrower's loans through the file.
    while len(slots) < loans:
        slots.append(slots[rng.randrange(len(slots))])
    del slots[loans:]
    rng.shuffle(slots)
    return slots


def write_loan_book(path: Path, loans: int, seed: int) -> Book:
    """Write a deterministic loan book of ``loans`` rows to ``path``."""
    rng = random.Random(seed)
    book = Book(loans=loans)
    slots = _people(rng, loans)
    loans_per_id: dict[str, int] = {}
    width = max(6, len(str(loans)))
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)  # \r\n line ends, as spreadsheets save them
        writer.writerow(HEADER)
        for n, (name, national_id, phones) in enumerate(slots, start=1):
            loans_per_id[national_id] = loans_per_id.get(national_id, 0) + 1
            principal = Decimal(rng.randrange(10, 1001) * 100)  # 1,000 to 100,000
            if rng.random() < 0.1:
                principal += Decimal(rng.randrange(1, 100)) * 5  # odd amounts: 12,345.00
            rate = Decimal(rng.choice((10, 12, 15, 18, 20, 25, 30))) / 100
            interest = (principal * rate).quantize(CENT)
            fees = Decimal(rng.choice((0, 0, 100, 250, 500, 750)))
            total = principal + interest + fees
            frequency = "weekly" if rng.random() < 0.55 else "monthly"
            count = rng.randint(4, 12)
            if rng.random() < 0.02:  # a few disbursed after "today": pending
                disbursed_on = ANCHOR + timedelta(days=rng.randrange(1, 15))
            else:
                disbursed_on = ANCHOR - timedelta(days=rng.randrange(0, 540))

            pick = rng.random()
            if pick < 0.25:
                paid_text, paid = "", Decimal(0)
            elif pick < 0.50:
                paid_text, paid = "0.00", Decimal(0)
            elif pick < 0.60:  # repaid in full: closed
                paid = total
                paid_text = f"{paid:.2f}"
                book.closed_loans += 1
            else:
                share = Decimal(rng.randrange(1, 100)) / 100
                paid = max(CENT, (total * share).quantize(CENT, rounding=ROUND_DOWN))
                paid_text = f"{paid:.2f}"
            if paid > 0:
                book.paid_loans += 1

            shown = [_phone_form(rng, p) for p in phones]
            if len(shown) > 1 and rng.random() < 0.6:
                phone = ";".join(shown)
                book.two_phone_rows += 1
            else:
                phone = shown[0]
            officer = "" if rng.random() < 0.03 else rng.choice(OFFICERS)
            if officer and rng.random() < 0.05:
                officer = officer.capitalize()  # e-mails typed with a capital

            writer.writerow(
                (
                    f"LOAN-{n:0{width}d}",
                    name,
                    national_id,
                    phone,
                    f"{principal:.2f}",
                    f"{interest:.2f}",
                    f"{fees:.2f}",
                    disbursed_on.isoformat(),
                    count,
                    frequency,
                    paid_text,
                    officer,
                )
            )
            book.installments += count
            book.total_due += total
            book.paid += paid
    book.borrowers = len(loans_per_id)
    book.borrowers_with_several_loans = sum(1 for c in loans_per_id.values() if c > 1)
    return book


# ---------------------------------------------------------------------------------------------
# Running the commands


@dataclass
class Run:
    backend: str
    loans: int
    import_seconds: float | None = None
    import_cpu: float | None = None
    import_ok: bool = False
    import_timed_out: bool = False
    export_seconds: float | None = None
    export_check: str = "not run"
    notes: list[str] = field(default_factory=list)


def _flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "app", *args]


def _env(database_url: str, repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("REDIS_URL", "MAREJESHO_ENV"):  # a throwaway database, jobs in-process
        env.pop(name, None)
    env["DATABASE_URL"] = database_url
    # Keeps config from writing instance/dev_secret_key into the checkout.
    env.setdefault("SECRET_KEY", "bench-only-not-a-secret")
    env["PYTHONUNBUFFERED"] = "1"
    # The checkout under test comes first, ahead of the venv's editable install.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(repo), env.get("PYTHONPATH"))))
    return env


@dataclass
class Done:
    code: int
    seconds: float  # wall clock
    cpu: float  # user + system CPU seconds of the command: steadier on a busy machine
    out: str
    err: str


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path) -> Done:
    started, cpu = time.perf_counter(), _child_cpu()
    try:
        done = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        err = _text(exc.stderr) + f"\n(timed out after {timeout:.0f} s)"
        elapsed = time.perf_counter() - started
        return Done(124, elapsed, _child_cpu() - cpu, _text(exc.stdout), err)
    elapsed = time.perf_counter() - started
    return Done(done.returncode, elapsed, _child_cpu() - cpu, done.stdout, done.stderr)


def _show(label: str, text: str, limit: int = 25) -> None:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return
    print(f"    {label}:")
    for line in lines[:limit]:
        print(f"      {line}")
    if len(lines) > limit:
        print(f"      … {len(lines) - limit} more line(s)")


def check_export(path: Path, book: Book) -> str:
    rows, total_due, paid = 0, Decimal(0), Decimal(0)
    closed = 0
    with open(path, encoding="utf-8-sig", newline="") as stream:
        for record in csv.DictReader(stream):
            rows += 1
            total_due += Decimal(record["total_due"])
            paid += Decimal(record["paid"])
            closed += record["status"] == "closed"
    problems = []
    if rows != book.loans:
        problems.append(f"{rows} rows, expected {book.loans}")
    if total_due != book.total_due:
        problems.append(f"total_due sums to {total_due}, expected {book.total_due}")
    if paid != book.paid:
        problems.append(f"paid sums to {paid}, expected {book.paid}")
    if closed != book.closed_loans:
        problems.append(f"{closed} closed, expected {book.closed_loans}")
    return "OK" if not problems else "FAIL: " + "; ".join(problems)


def bench_backend(
    backend: str,
    database_url: str,
    csv_path: Path,
    book: Book,
    workdir: Path,
    args: argparse.Namespace,
) -> Run:
    run = Run(backend, book.loans)
    env = _env(database_url, args.repo)
    print(f"\n[{backend}] db upgrade (not timed)")
    done = _run(_flask("db", "upgrade"), env, args.timeout, args.repo)
    if done.code != 0:
        _show("stderr", done.err)
        run.notes.append("db upgrade failed")
        return run
    print(f"    {done.seconds:.1f} s")

    print(f"[{backend}] lenders import-loans {csv_path.name}")
    cmd = _flask("lenders", "import-loans", str(csv_path))
    profile_path = workdir / f"import-{backend}.prof"
    if args.profile:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile_path), *cmd[1:]]
        run.notes.append("import ran under cProfile (slower than normal)")
    done = _run(cmd, env, args.timeout, args.repo)
    run.import_seconds, run.import_cpu, run.import_ok = done.seconds, done.cpu, done.code == 0
    print(f"    exit {done.code} in {done.seconds:.2f} s ({done.cpu:.1f} s CPU)")
    _show("stdout", done.out)
    _show("stderr (the importer's errors)" if done.code else "stderr", done.err)
    if done.code != 0:
        run.import_timed_out = done.code == 124 and "timed out after" in done.err
        run.notes.append(
            f"import timed out after {done.seconds:.0f} s"
            if run.import_timed_out
            else f"import exited {done.code}"
        )
        return run
    if args.profile and profile_path.exists():
        print(f"    profile: {profile_path} (top {args.profile_top} by cumulative time)")
        stats = pstats.Stats(str(profile_path))
        stats.sort_stats("cumulative").print_stats(args.profile_top)

    out_path = workdir / f"export-{backend}.csv"
    print(f"[{backend}] lenders export-loans {out_path.name}")
    export_timeout = args.export_timeout or args.timeout
    done = _run(_flask("lenders", "export-loans", str(out_path)), env, export_timeout, args.repo)
    print(f"    exit {done.code} in {done.seconds:.2f} s ({done.cpu:.1f} s CPU)")
    _show("stdout", done.out)
    _show("stderr", done.err)
    if done.code == 0 and out_path.exists():
        run.export_seconds = done.seconds
        run.export_check = check_export(out_path, book)
    elif done.code == 124 and "timed out after" in done.err:
        run.export_check = f"FAIL: timed out after {done.seconds:.0f} s"
    else:
        run.export_check = f"FAIL: export exited {done.code}"
    print(f"    export check: {run.export_check}")
    return run


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    for prefix in ("postgres://", "postgresql://"):  # as lenders.config.database_url does
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _describe(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    if not head:
        return "not a git checkout"
    return f"HEAD {head[:60]}" + (", with uncommitted changes" if dirty else "")


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} CPU(s)"


def _database_name(url: str) -> str:
    return url.rsplit("/", 1)[-1].split("?", 1)[0]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=GOAL_LOANS, help="rows (default 100000)")
    parser.add_argument("--seed", type=int, default=20261123, help="generator seed")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("MAREJESHO_BENCH_POSTGRES_URL"),
        metavar="URL",
        help="also run on this PostgreSQL database; its public schema is DROPPED and recreated "
        "(default: $MAREJESHO_BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--allow-any-database",
        action="store_true",
        help="reset a PostgreSQL database whose name has neither 'bench' nor 'test' in it",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--profile", action="store_true", help="run the imports under cProfile")
    parser.add_argument("--profile-top", type=int, default=30, metavar="N")
    parser.add_argument(
        "--repo",
        type=Path,
        default=ROOT,
        help="run the commands in this checkout (default: the one holding this script); "
        "handy to compare a change against the current code",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--timeout", type=float, default=900, help="per command, seconds")
    parser.add_argument(
        "--export-timeout",
        type=float,
        metavar="SECONDS",
        help="for the export (default: --timeout)",
    )
    args = parser.parse_args(argv)
    if args.loans < 1:
        parser.error("--loans must be at least 1")
    if args.postgres:
        name = _database_name(args.postgres)
        if not args.allow_any_database and "bench" not in name and "test" not in name:
            parser.error(
                f"refusing to drop the schema of database {name!r}: use a database named "
                "*bench* or *test*, or pass --allow-any-database"
            )

    args.repo = args.repo.resolve()
    if not (args.repo / "app.py").is_file():
        parser.error(f"{args.repo} has no app.py")
    # A kill (timeout, Ctrl-C from a parent) still removes the temporary directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = Path(tempfile.mkdtemp(prefix="marejesho-bench-"))
    runs: list[Run] = []
    try:
        print(f"checkout under test: {args.repo} ({_describe(args.repo)})")
        csv_path = workdir / f"loans-{args.loans}.csv"
        started = time.perf_counter()
        book = write_loan_book(csv_path, args.loans, args.seed)
        size = csv_path.stat().st_size
        print(
            f"generated {csv_path} in {time.perf_counter() - started:.1f} s: "
            f"{book.loans:,} loans, {book.borrowers:,} borrowers "
            f"({book.borrowers / book.loans:.2f} per loan, {book.borrowers_with_several_loans:,} "
            f"with 2+ loans), {book.installments:,} installments, {book.paid_loans:,} loans "
            f"with amount_paid > 0 ({book.closed_loans:,} fully), "
            f"{book.two_phone_rows:,} rows with two phones, {size / 1e6:.1f} MB"
        )

        env = _env(f"sqlite:///{workdir / 'startup.db'}", args.repo)
        done = _run(_flask("lenders", "--help"), env, args.timeout, args.repo)
        print(
            f"app start-up (flask --app app lenders --help): {done.seconds:.2f} s, "
            "included in every figure"
        )
        if done.code:
            _show("stderr", done.err)
        print(f"load average: {_load()}")

        if not args.no_sqlite:
            sqlite_file = workdir / "bench.db"
            runs.append(
                bench_backend("sqlite", f"sqlite:///{sqlite_file}", csv_path, book, workdir, args)
            )
        if args.postgres:
            print(f"\n[postgresql] resetting schema public of {_database_name(args.postgres)}")
            try:
                reset_postgres(args.postgres)
            except Exception as exc:  # reported; the PostgreSQL run is skipped
                print(f"    cannot reset: {exc}")
                runs.append(Run("postgresql", book.loans, notes=["schema reset failed"]))
            else:
                runs.append(
                    bench_backend("postgresql", args.postgres, csv_path, book, workdir, args)
                )
    finally:
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            for path in sorted(workdir.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()

    print(f"\nload average: {_load()}")
    print_table(runs)
    return 0 if all(r.import_ok for r in runs) else 1


def print_table(runs: list[Run]) -> None:
    goal = f"goal: {GOAL_LOANS:,} loans imported in under {GOAL_SECONDS:.0f} s"
    print(f"\n{goal}")
    columns = (
        "loans",
        "backend",
        "import s",
        "CPU s",
        "loans/s",
        "export s",
        "export check",
        "goal",
    )
    table = [columns]
    for r in runs:
        if r.import_ok and r.import_seconds:
            rate = r.loans / r.import_seconds
            if r.loans < GOAL_LOANS:  # start-up dominates small runs: no verdict
                verdict = f"n/a (< {GOAL_LOANS:,} loans)"
            else:
                verdict = "PASS" if r.import_seconds < GOAL_SECONDS else "FAIL"
            cells = (
                f"{r.loans:,}",
                r.backend,
                f"{r.import_seconds:.1f}",
                f"{r.import_cpu:.1f}",
                f"{rate:,.0f}",
                f"{r.export_seconds:.1f}" if r.export_seconds is not None else "-",
                r.export_check,
                verdict,
            )
        else:
            took = f">{r.import_seconds:.0f}" if r.import_timed_out else "failed"
            cpu = f"{r.import_cpu:.1f}" if r.import_cpu else "-"
            cells = (f"{r.loans:,}", r.backend, took, cpu, "-", "-", r.export_check, "FAIL")
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for r in runs:
        for note in r.notes:
            print(f"note ({r.backend}): {note}")


if __name__ == "__main__":
    sys.exit(main())
