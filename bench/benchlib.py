"""Shared helpers of the payments benchmarks (confirmations, match_latency,
transactions_page): the environment the app's commands run in, PostgreSQL resets, a small
loan-book CSV for the real importer, a set-based generator for books of a million loans, and
percentile tables. Not a benchmark itself."""

from __future__ import annotations

import csv
import hashlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the checkout under test, ahead of the venv's editable install
    sys.path.insert(0, str(ROOT))

# A fixed "today", so that generated books are the same whatever day the benchmark runs.
ANCHOR = date(2026, 11, 1)
# A fixed Fernet key (bench only): keeps config from writing keys into instance/.
BENCH_FERNET_KEY = "YmVuY2gtb25seS1ub3QtYS1zZWNyZXQta2V5LTAwMDA="
BENCH_SECRET_KEY = "bench-only-not-a-secret"

FIRST_NAMES = [
    "Jane",
    "John",
    "Mary",
    "Peter",
    "Grace",
    "James",
    "Faith",
    "David",
    "Mercy",
    "Joseph",
    "Esther",
    "Daniel",
    "Ann",
    "Samuel",
    "Lucy",
    "Brian",
    "Njeri",
    "Kevin",
    "Akinyi",
    "Kiprono",
    "Wairimu",
    "Mutua",
    "Achieng",
    "Kipchoge",
    "Nafula",
    "Omondi",
    "Chebet",
    "Mwangi",
    "Atieno",
    "Wekesa",
    "Wanjiru",
    "Kibet",
    "Moraa",
    "Nyokabi",
    "Juma",
    "Halima",
    "Amina",
    "Hassan",
    "Fatuma",
    "Baraka",
    "Zawadi",
    "Imani",
    "Neema",
    "Tabitha",
    "Caroline",
    "Dennis",
    "Collins",
    "Purity",
    "Beatrice",
    "Cynthia",
    "Evans",
    "Felix",
]
MIDDLE_NAMES = ["Wambui", "Njoki", "Auma", "Jepkoech", "Kerubo", "Muthoni", "Chepkemoi", "Anyango"]
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
    "Nganga",
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


# ---------------------------------------------------------------------------------------------
# Environment, commands, databases


def normalise_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):  # as lenders.config.database_url does
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[-1].split("?", 1)[0]


def check_resettable(parser, url: str | None, allow_any: bool) -> None:
    """Refuse to drop the schema of a database that does not look like a bench database."""
    if url and not url.startswith("sqlite"):
        name = database_name(url)
        if not allow_any and "bench" not in name:
            parser.error(
                f"refusing to reset database {name!r}: use a database named *bench* "
                "(never mj_test), or pass --allow-any-database"
            )


def app_env(database_url: str) -> dict[str, str]:
    """The environment the app runs in for a benchmark: the embedded defaults (no Redis:
    jobs run in-process), a throwaway database, fixed keys so nothing lands in instance/."""
    env = dict(os.environ)
    for name in ("REDIS_URL", "MAREJESHO_ENV", "MAREJESHO_PROXY_HOPS"):
        env.pop(name, None)
    env["DATABASE_URL"] = database_url
    env["SECRET_KEY"] = BENCH_SECRET_KEY
    env["MAREJESHO_ENCRYPTION_KEYS"] = BENCH_FERNET_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


def use_app_env(database_url: str) -> None:
    """Point this process's own create_app() at the bench database."""
    os.environ.update(app_env(database_url))


def flask(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run ``flask --app app ARGS`` in the checkout; its stdout, or SystemExit with stderr."""
    cmd = [sys.executable, "-m", "flask", "--app", "app", *args]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise SystemExit(
            f"`flask --app app {' '.join(args)}` exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done.stdout


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(normalise_url(url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def fresh_schema(url: str) -> None:
    """An empty, migrated database (PostgreSQL: public schema dropped first)."""
    if not url.startswith("sqlite"):
        reset_postgres(url)
    started = time.perf_counter()
    flask(app_env(url), "db", "upgrade")
    print(f"  flask --app app db upgrade: {time.perf_counter() - started:.1f} s")


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def describe_checkout() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"HEAD {head[:70]}" + (", with uncommitted changes" if dirty else "")


# ---------------------------------------------------------------------------------------------
# Figures


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary_ms(seconds: Iterable[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": values[-1] if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def print_table(header: tuple[str, ...], rows: list[tuple], indent: str = "  ") -> None:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print(indent + "  ".join("-" * w for w in widths))


# ---------------------------------------------------------------------------------------------
# Phones and references as people and Safaricom write them


def plain_forms(canonical: str, rng: random.Random) -> str:
    """A canonical 2547XXXXXXXX as a borrower types it as account number."""
    national = canonical[3:]
    return rng.choice(
        (
            f"0{national}",
            f"0{national[:3]} {national[3:6]} {national[6:]}",
            f"+254{national}",
            canonical,
            f"0{national[:3]}-{national[3:]}",
        )
    )


def masked_msisdn(canonical: str, rng: random.Random | None = None) -> str:
    """Register v2's masked MSISDN: ``2547 ***** 126`` (sometimes ``25470****149``)."""
    if rng is not None and rng.random() < 0.2:
        return f"{canonical[:5]}****{canonical[-3:]}"
    return f"{canonical[:4]} ***** {canonical[-3:]}"


def sha256_hex(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def sloppy_reference(number: str, rng: random.Random) -> str:
    """``LOAN-000123`` as borrowers type it: ``loan 123``, ``123``, ``Loan-123``, …"""
    digits = number.split("-", 1)[1]
    bare = str(int(digits))
    return rng.choice(
        (
            f"loan {bare}",
            bare,
            f"Loan-{bare}",
            f"LOAN{digits}",
            f"ln {bare}",
            f" loan-{digits} ",
            f"LOAN {bare}",
            digits,
        )
    )


# ---------------------------------------------------------------------------------------------
# A small loan book as CSV, for the real `flask lenders import-loans`


def write_small_book(path: Path, loans: int, seed: int) -> None:
    """``loans`` rows in the CONTRACT §6 format, ~0.7 borrowers per loan, no shared phones."""
    rng = random.Random(seed)
    borrowers = max(1, round(loans / 1.4))
    ids = rng.sample(range(10_000_000, 39_999_999), borrowers)
    phones = rng.sample(range(100_000_000), borrowers * 2)
    people = []
    for n, national_id in enumerate(ids):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
        numbers = [f"07{phones[2 * n] % 100_000_000:08d}"]
        if rng.random() < 0.25:
            numbers.append(f"07{phones[2 * n + 1] % 100_000_000:08d}")
        people.append((name, str(national_id), ";".join(numbers)))
    slots = list(people) + [rng.choice(people) for _ in range(max(0, loans - len(people)))]
    rng.shuffle(slots)
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
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
            ]
        )
        for n, (name, national_id, phone) in enumerate(slots[:loans], start=1):
            principal = rng.randrange(10, 1001) * 100
            interest = principal * rng.choice((10, 12, 15, 20, 25)) // 100
            total = principal + interest
            paid = 0 if rng.random() < 0.5 else total * rng.randrange(0, 90) // 100
            writer.writerow(
                (
                    f"LOAN-{n:06d}",
                    name,
                    national_id,
                    phone,
                    f"{principal}.00",
                    f"{interest}.00",
                    "0.00",
                    date.fromordinal(ANCHOR.toordinal() - rng.randrange(0, 300)).isoformat(),
                    rng.randint(4, 12),
                    rng.choice(("weekly", "monthly")),
                    f"{paid}.00",
                    rng.choice(OFFICERS),
                )
            )


# ---------------------------------------------------------------------------------------------
# A loan book of a million loans, built with set-based SQL (no Python row loop)

# Odd multipliers for the mixing functions below: (n * A + C) % P, P prime.
_MIX = (
    (2654435761, 12345),
    (40503, 777),
    (69069, 1),
    (1103515245, 12345),
    (22695477, 1),
    (134775813, 1),
    (1664525, 1013904223),
    (214013, 2531011),
    (48271, 0),
    (16807, 99),
)
MIX_PRIME = 1_000_003


def mix(expr: str, k: int) -> str:
    """A deterministic pseudo-random integer in [0, 1000003) from an integer SQL expression."""
    a, c = _MIX[k % len(_MIX)]
    return f"((CAST({expr} AS BIGINT) * {a} + {c}) % {MIX_PRIME})"


def coprime_multiplier(modulus: int) -> int:
    """A prime below 10,000 that does not divide ``modulus``: n * m % modulus is a bijection."""
    for candidate in (7919, 7907, 7901, 7883, 7877, 7873):
        if modulus % candidate:
            return candidate
    raise ValueError(modulus)


class Dialect:
    """The few SQL spellings SQLite and PostgreSQL disagree on."""

    def __init__(self, name: str):
        self.name = name
        self.pg = name == "postgresql"

    def series(self, count: int, column: str = "n", name: str = "s") -> str:
        """A CTE ``name`` with one column 1..count (use as ``WITH {series} ...``)."""
        if self.pg:
            return f"{name}({column}) AS (SELECT generate_series(CAST(1 AS bigint), {int(count)}))"
        return (
            f"RECURSIVE {name}({column}) AS (SELECT 1 UNION ALL SELECT {column} + 1 "
            f"FROM {name} WHERE {column} < {int(count)})"
        )

    def pad(self, expr: str, width: int) -> str:
        if self.pg:
            return f"lpad(CAST({expr} AS text), {width}, '0')"
        return f"printf('%0{width}d', {expr})"

    def hex8(self, expr: str) -> str:
        if self.pg:
            return f"upper(lpad(to_hex(CAST({expr} AS bigint)), 8, '0'))"
        return f"printf('%08X', {expr})"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS {'text' if self.pg else 'TEXT'})"

    def sha256(self, expr: str) -> str:
        if self.pg:
            return f"encode(sha256(convert_to({expr}, 'UTF8')), 'hex')"
        return f"bench_sha256({expr})"

    def timestamp(self, value: datetime) -> str:
        """A UTC literal, stored the way SQLAlchemy stores a UTCDateTime on this backend."""
        if self.pg:
            return f"TIMESTAMPTZ '{value.strftime('%Y-%m-%d %H:%M:%S')}+00'"
        return f"'{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"

    def seconds_after(self, value: datetime, seconds_expr: str) -> str:
        """A UTC time ``seconds_expr`` (integer SQL) after ``value``, as stored."""
        if self.pg:
            return f"({self.timestamp(value)} + ({seconds_expr}) * INTERVAL '1 second')"
        base = value.strftime("%Y-%m-%d %H:%M:%S")
        return f"(datetime('{base}', ({seconds_expr}) || ' seconds') || '.000000')"

    def date_literal(self, value: date) -> str:
        return f"DATE '{value.isoformat()}'" if self.pg else f"'{value.isoformat()}'"

    def days_after(self, date_expr: str, days_expr: str) -> str:
        if self.pg:
            return f"(({date_expr}) + CAST({days_expr} AS integer))"
        return f"date({date_expr}, ({days_expr}) || ' days')"

    def months_after(self, date_expr: str, months_expr: str) -> str:
        if self.pg:
            return f"CAST(({date_expr}) + ({months_expr}) * INTERVAL '1 month' AS date)"
        return f"date({date_expr}, ({months_expr}) || ' months')"

    def first_word(self, expr: str) -> str:
        if self.pg:
            return f"split_part({expr}, ' ', 1)"
        return f"substr({expr}, 1, instr({expr} || ' ', ' ') - 1)"

    def last_word(self, expr: str) -> str:
        if self.pg:
            return f"regexp_replace({expr}, '^.* ', '')"
        return f"replace({expr}, rtrim({expr}, replace({expr}, ' ', '')), '')"


def bench_engine(url: str):
    """A plain engine for building data (SQLite: with a sha256() SQL function and
    bulk-load pragmas on its own connections)."""
    from sqlalchemy import create_engine, event

    engine = create_engine(normalise_url(url))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.create_function(
                "bench_sha256",
                1,
                lambda s: hashlib.sha256(s.encode()).hexdigest() if s is not None else None,
                deterministic=True,
            )
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-1000000")  # 1 GB while loading only
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

    return engine


def phone_sql(d: Dialect, input_expr: str) -> str:
    """A canonical phone (12 digits) from an integer; distinct inputs below 10^8 give
    distinct numbers. One in ten is a 2541… number, the rest 2547…"""
    digits = f"(({input_expr}) * 9999991) % 100000000"
    prefix = f"CASE WHEN ({input_expr}) % 10 = 3 THEN '2541' ELSE '2547' END"
    return f"({prefix} || {d.pad(digits, 8)})"


def unknown_phone(i: int) -> str:
    """A canonical phone that no generated borrower has (inputs from 90,000,000 up)."""
    n = 90_000_000 + i
    prefix = "2541" if n % 10 == 3 else "2547"
    return f"{prefix}{(n * 9999991) % 100_000_000:08d}"


def build_book(
    engine,
    *,
    loans: int,
    borrowers: int,
    installments: bool = True,
    log=print,
) -> dict[str, float]:
    """Staff (1 admin, 5 officers), ``borrowers`` borrowers with ~1.25 phones each and
    ``loans`` loans (65 % of borrowers with one loan, 26 % two, 9 % three), optionally with
    their installment schedules, all inserted set-based. Loan ids are 1..loans and
    numbers LOAN-0000001…; the first phone of borrower b has id b. Returns seconds per
    step. The database must be freshly migrated and empty."""
    from sqlalchemy import text

    d = Dialect(engine.dialect.name)
    timings: dict[str, float] = {}
    now = datetime(2026, 11, 1, 6, 0, 0)
    extra = loans - borrowers
    if extra < 0:
        raise ValueError("fewer loans than borrowers")
    two = extra * 4 // 5  # borrowers with a second loan; a quarter of them get a third
    mult = coprime_multiplier(borrowers)

    def step(name: str, *statements: str) -> None:
        started = time.perf_counter()
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
        timings[name] = time.perf_counter() - started
        log(f"  {name}: {timings[name]:.1f} s")

    names = []
    for table, values in (
        ("bench_first", FIRST_NAMES),
        ("bench_middle", MIDDLE_NAMES),
        ("bench_last", SURNAMES),
    ):
        names.append(f"DROP TABLE IF EXISTS {table}")
        names.append(f"CREATE TABLE {table} (i INTEGER PRIMARY KEY, name VARCHAR(40))")
        names.append(
            f"INSERT INTO {table} (i, name) VALUES "
            + ", ".join(f"({i}, '{v}')" for i, v in enumerate(values))
        )
    staff = [
        "INSERT INTO staff_user (id, email, name, role, active, session_token, created_at) "
        f"VALUES (1, 'admin@bench.marejesho.test', 'Bench Admin', 'admin', true, "
        f"'{'a' * 32}', {d.timestamp(now)})"
    ] + [
        "INSERT INTO staff_user (id, email, name, role, active, session_token, created_at) "
        f"VALUES ({n}, '{email}', '{email.split('@')[0]}', 'officer', true, '{str(n) * 32}', "
        f"{d.timestamp(now)})"
        for n, email in enumerate(OFFICERS, start=2)
    ]
    step("staff and name tables", *names, *staff)

    national = "(10000000 + (n * 7919) % 30000000)"
    step(
        f"{borrowers:,} borrowers",
        f"WITH {d.series(borrowers)} "
        "INSERT INTO borrower (id, name, national_id, credit, created_at) "
        "SELECT n, f.name || CASE WHEN "
        + mix("n", 2)
        + " % 5 = 0 THEN ' ' || m.name ELSE '' END || ' ' || l.name, "
        f"CASE WHEN n % 29 = 0 THEN 'A' || {d.text(national)} ELSE {d.text(national)} END, "
        f"0, {d.timestamp(now)} FROM s "
        f"JOIN bench_first f ON f.i = {mix('n', 0)} % {len(FIRST_NAMES)} "
        f"JOIN bench_last l ON l.i = {mix('n', 1)} % {len(SURNAMES)} "
        f"JOIN bench_middle m ON m.i = {mix('n', 2)} % {len(MIDDLE_NAMES)}",
    )
    second = "(n * 4)"  # borrowers 4, 8, 12, … have a second phone
    step(
        "phones",
        f"WITH {d.series(borrowers)} "
        "INSERT INTO borrower_phone (id, borrower_id, number, sha256, masked_key) "
        f"SELECT n, n, p, {d.sha256('p')}, substr(p, 1, 4) || substr(p, 10, 3) "
        f"FROM (SELECT n, {phone_sql(d, 'n')} AS p FROM s) x",
        f"WITH {d.series(borrowers // 4)} "
        "INSERT INTO borrower_phone (id, borrower_id, number, sha256, masked_key) "
        f"SELECT {borrowers} + n, {second}, p, {d.sha256('p')}, "
        "substr(p, 1, 4) || substr(p, 10, 3) "
        f"FROM (SELECT n, {phone_sql(d, f'50000000 + {second}')} AS p FROM s) x",
    )
    borrower_of = (
        f"CASE WHEN n <= {borrowers} THEN n "
        f"WHEN n <= {borrowers + two} THEN ((n - {borrowers}) * {mult}) % {borrowers} + 1 "
        f"ELSE ((n - {borrowers + two}) * {mult}) % {borrowers} + 1 END"
    )
    rate = (
        f"CASE {mix('n', 3)} % 5 WHEN 0 THEN 0.10 WHEN 1 THEN 0.12 WHEN 2 THEN 0.15 "
        "WHEN 3 THEN 0.20 ELSE 0.25 END"
    )
    status = (
        f"CASE WHEN {mix('n', 4)} % 100 < 80 THEN 'active' "
        f"WHEN {mix('n', 4)} % 100 < 95 THEN 'closed' "
        f"WHEN {mix('n', 4)} % 100 < 97 THEN 'written_off' ELSE 'pending' END"
    )
    base = (
        f"SELECT n, {borrower_of} AS borrower_id, "
        f"(({mix('n', 5)} % 991) + 10) * 100 AS principal, {rate} AS rate, "
        f"CASE {mix('n', 6)} % 4 WHEN 0 THEN 250 WHEN 1 THEN 500 ELSE 0 END AS fees, "
        f"4 + {mix('n', 7)} % 9 AS cnt, {status} AS status, "
        f"CASE WHEN {mix('n', 8)} % 100 < 55 THEN 'weekly' ELSE 'monthly' END AS frequency, "
        f"{mix('n', 9)} AS h FROM s"
    )
    sized = (
        "SELECT b.*, round(principal * rate, 2) AS interest, "
        "principal + round(principal * rate, 2) + fees AS total FROM (" + base + ") b"
    )
    paid_count = "CASE status WHEN 'closed' THEN cnt WHEN 'pending' THEN 0 ELSE h % cnt END"
    per = "round(total * 1.0 / cnt, 2)"
    disbursed = (
        f"CASE WHEN status = 'pending' THEN {d.days_after(d.date_literal(ANCHOR), '1 + h % 14')} "
        f"ELSE {d.days_after(d.date_literal(ANCHOR), '-(h % 540)')} END"
    )
    step(
        f"{loans:,} loans",
        f"WITH {d.series(loans)} "
        "INSERT INTO loan (id, number, reference_key, borrower_id, officer_id, principal, "
        "interest, fees, paid, disbursed_on, installment_count, frequency, status, created_at) "
        f"SELECT n, 'LOAN-' || {d.pad('n', 7)}, {d.text('n')}, borrower_id, 2 + h % 5, "
        f"principal, interest, fees, "
        f"CASE WHEN status = 'closed' THEN total ELSE {per} * ({paid_count}) END, "
        f"{disbursed}, cnt, frequency, status, {d.timestamp(now)} FROM ({sized}) x",
    )
    if installments:
        loan_total = "(l.principal + l.interest + l.fees)"
        per_l = f"round({loan_total} * 1.0 / l.installment_count, 2)"
        paid_upto = (
            f"CASE WHEN l.status = 'closed' THEN l.installment_count "
            f"ELSE CAST(round(l.paid / {per_l}, 0) AS INTEGER) END"
        )
        amount_due = (
            f"CASE WHEN k.seq = l.installment_count THEN round({loan_total} - {per_l} * "
            f"(l.installment_count - 1), 2) ELSE {per_l} END"
        )
        due_on = (
            f"CASE WHEN l.frequency = 'weekly' THEN {d.days_after('l.disbursed_on', '7 * k.seq')} "
            f"ELSE {d.months_after('l.disbursed_on', 'k.seq')} END"
        )
        series = d.series(12, "seq", "k")
        step(
            "installments",
            f"WITH {series} "
            "INSERT INTO installment (loan_id, seq, due_on, amount_due, amount_paid) "
            f"SELECT l.id, k.seq, {due_on}, {amount_due}, "
            f"CASE WHEN k.seq <= {paid_upto} THEN {amount_due} ELSE 0 END "
            "FROM loan l JOIN k ON k.seq <= l.installment_count",
        )
    if d.pg:
        step(
            "sequences",
            *(
                f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {t}))"
                for t in ("staff_user", "borrower", "borrower_phone", "loan", "installment")
            ),
        )
    return timings


def analyze(engine) -> float:
    """Refresh planner statistics (PostgreSQL's autovacuum would do it within a minute)."""
    from sqlalchemy import text

    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


def explain(connection, sql: str, params) -> str:
    """The plan of a raw DB-API query, as text."""
    cursor = connection.cursor()
    if type(connection).__module__.startswith("sqlite3"):
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(f"{row[1]:>3} {row[3]}" for row in cursor.fetchall())
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
    return "\n".join(row[0] for row in cursor.fetchall())
