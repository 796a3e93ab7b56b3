"""Benchmark: the officers' Transactions page over 1,000,000 C2B payments.

Not a test: it prints figures. Into a freshly migrated database it puts, with set-based
INSERT … SELECT statements, a loan book (``--loans``, default 100,000) and ``--payments``
(default 1,000,000) c2b_payment rows over one year: 86 % posted (each with its repayment and
payment_repayment link, as processing leaves them), 10.5 % unmatched, some failed, in review
and reversed; MSISDNs masked (v2, FirstName only), hashed (v1) or plain; bill references as
borrowers type them. Then, for each filter of the page, it times

    payments.transactions.find_payments(session, viewer, TransactionFilter(...))  # first page
    … the same with before_id = the cursor it returned                       # keyset page 2

(on a session whose connection is already open, as it is in a request once its login check
has read the user, reading every field the list shows) against the
raw SQL of the same page, written by hand and run on the DB-API cursor with no SQLAlchemy at
all (a connection of the app's own engine, so the same SQLite pragmas), and prints the ratio
(goal: app ≤ 3× raw). The raw side is the honest equivalent of
what the page shows, not a cheaper query: the same ten columns, the same WHERE, ORDER BY id
DESC LIMIT 51, and in the same statement the numbers of the loans each payment is posted to
(LEFT JOIN payment_repayment → repayment, not reversed → loan); for the officer, the same
UNION ALL of two keyset branches (payments nobody has placed yet, and the officer's placed
ones) that the app sends; on SQLite, which answers text and floats, the raw side also turns
received_at and amount into the datetime and Decimal the list formats, as psycopg does by
itself on PostgreSQL. So the ratio measures what the app adds over the database (query
building, SQLAlchemy, rows), and the raw column how good the plan is.
Then it times the whole HTTP request through the Flask test client (login, query, template)
for two filters, to show what rendering adds. Slow filters (raw page over --explain-over-ms)
get their query plan printed.

    .venv/bin/python bench/transactions_page.py                     # SQLite in a temp dir
    .venv/bin/python bench/transactions_page.py \\
        --database-url postgresql+psycopg://mj:mj@127.0.0.1/mj_bench2
    .venv/bin/python bench/transactions_page.py --payments 200000   # quicker

With --database-url (PostgreSQL) the public schema is dropped and rebuilt unless it already
holds this benchmark's data of the same size (then it is reused; --rebuild forces).
--sqlite-file PATH keeps (and reuses) the SQLite file instead of a temporary one.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import benchlib as bl

GOAL_RATIO = 3.0
YEAR_SECONDS = 365 * 86400
START = datetime(2025, 11, 1, 0, 0, 0)  # UTC; the payments run from here to bl.ANCHOR


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--payments", type=int, default=1_000_000, help="default 1000000")
    parser.add_argument("--loans", type=int, default=100_000, help="the book (100000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (5)")
    parser.add_argument(
        "--budget",
        type=float,
        default=12,
        metavar="SECONDS",
        help="about this long at most on the timed runs of one filter (12)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL (e.g. postgresql+psycopg://mj:mj@127.0.0.1/mj_bench2); its public "
        "schema is DROPPED unless it holds this benchmark's data already",
    )
    parser.add_argument("--sqlite-file", type=Path, help="keep the SQLite data here and reuse it")
    parser.add_argument("--rebuild", action="store_true", help="rebuild reusable data")
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on SQLite after the build (the app never does; PostgreSQL is "
        "always analyzed, as autovacuum would)",
    )
    parser.add_argument(
        "--explain-over-ms",
        type=float,
        default=20,
        help="print the plan of filters whose raw first page takes longer (20)",
    )
    parser.add_argument(
        "--try-indexes",
        action="store_true",
        help="afterwards, for the slow filters, create a candidate index (or use a rewritten "
        "query) in the bench database, time the raw page again and drop it: which change "
        "would fix them (the app's schema is not changed)",
    )
    parser.add_argument("--allow-any-database", action="store_true")
    args = parser.parse_args(argv)
    if args.payments < 1000 or args.loans < 100:
        parser.error("at least 1000 payments and 100 loans")
    bl.check_resettable(parser, args.database_url, args.allow_any_database)
    return args


# ---------------------------------------------------------------------------------------------
# The data


def marker(args) -> str:
    return f"transactions_page payments={args.payments} loans={args.loans}"


def build(url: str, args) -> None:
    from sqlalchemy import text

    engine = bl.bench_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT value FROM bench_meta")).scalar()
    except Exception:  # noqa: BLE001 - no such table
        found = None
    if found == marker(args) and not args.rebuild:
        print(f"reusing the data in {bl.database_name(url)} ({found})")
        engine.dispose()
        return
    engine.dispose()
    print(f"building ({marker(args)})")
    started = time.perf_counter()
    bl.fresh_schema(url)
    engine = bl.bench_engine(url)
    d = bl.Dialect(engine.dialect.name)
    bl.build_book(engine, loans=args.loans, borrowers=round(args.loans * 0.7), installments=False)
    fill_payments(engine, d, args.payments, args.loans)
    if d.pg or args.sqlite_analyze:
        print(f"  analyze: {bl.analyze(engine):.1f} s")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE bench_meta (value VARCHAR(200))"))
        connection.execute(text("INSERT INTO bench_meta VALUES (:v)"), {"v": marker(args)})
    engine.dispose()
    print(f"  built in {time.perf_counter() - started:.1f} s")


def fill_payments(engine, d: bl.Dialect, count: int, loans: int) -> None:
    from sqlalchemy import text

    mix = bl.mix

    def step(name, *statements):
        started = time.perf_counter()
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
        print(f"  {name}: {time.perf_counter() - started:.1f} s")

    now = d.timestamp(datetime(2025, 10, 1))
    shortcodes = [
        "INSERT INTO shortcode (id, number, name, kind, environment, callback_token, "
        "register_version, amount_tolerance, validation_policy, allowed_ips, created_at) VALUES "
        f"(1, '600984', 'Bench paybill', 'paybill', 'production', '{'b' * 40}', 'v2', 10, "
        f"'accept_all', '', {now}), "
        f"(2, '5123456', 'Bench till', 'till', 'production', '{'c' * 40}', 'v1', 10, "
        f"'accept_all', '', {now})"
    ]
    r = f"{mix('n', 0)} % 1000"
    status = (
        f"CASE WHEN n > {count - 40} THEN 'received' WHEN {r} < 860 THEN 'posted' "
        f"WHEN {r} < 965 THEN 'unmatched' WHEN {r} < 980 THEN 'failed' "
        f"WHEN {r} < 990 THEN 'review' ELSE 'reversed' END"
    )
    seconds = f"(n * {YEAR_SECONDS}) / {count}"
    # 1. per row: its loan (and so its borrower and phone), status and a few dice
    base = (
        f"SELECT n, {mix('n', 1)} % {loans} + 1 AS loan_id, {status} AS status, "
        f"{mix('n', 3)} % 10 AS form, {mix('n', 4)} % 10 AS rk, {mix('n', 5)} AS h, "
        f"{mix('n', 6)} AS h2 FROM s"
    )
    inner = (
        "SELECT x.n, x.status, x.form, x.rk, x.h, x.h2, l.number AS loan_number, "
        "l.id AS lid, l.borrower_id, b.name AS bname, b.national_id, p.number AS bphone "
        f"FROM ({base}) x JOIN loan l ON l.id = x.loan_id "
        "JOIN borrower b ON b.id = l.borrower_id JOIN borrower_phone p ON p.id = l.borrower_id"
    )
    # 2. what the payer sent: MSISDN, account, amount; and the rule processing chose
    placed = "status IN ('posted', 'review', 'reversed')"
    stranger = "'2547' || " + d.pad(f"({mix('n', 7)} * 7) % 100000000", 8)
    payer = f"CASE WHEN status = 'unmatched' AND h % 2 = 0 THEN {stranger} ELSE bphone END"
    posted_ref = (
        "CASE WHEN rk < 3 THEN loan_number "
        f"WHEN rk < 5 THEN 'loan ' || {d.text('lid')} "
        "WHEN rk < 7 THEN '' WHEN rk = 7 THEN 'PAYMENT' "
        "WHEN rk = 8 THEN national_id "
        "ELSE '0' || substr(bphone, 4, 9) END"
    )
    junk_ref = (
        f"CASE h2 % 4 WHEN 0 THEN 'LOAN-' || {d.pad('h % 2000000', 7)} "
        f"WHEN 1 THEN 'PAY' || {d.text('h % 1000')} WHEN 2 THEN 'school fees' ELSE '' END"
    )
    rule = (
        "CASE WHEN status <> 'posted' THEN NULL WHEN rk < 5 THEN 'bill_ref' "
        "WHEN rk < 8 THEN 'single_loan' WHEN rk = 8 THEN 'amount' ELSE 'oldest_due' END"
    )
    amount = (
        "CASE WHEN h2 % 100 < 70 THEN (h % 300 + 1) * 10 "
        "WHEN h2 % 100 < 95 THEN (h % 100 + 30) * 100 ELSE (h % 500 + 100) * 100 END"
    )
    middle = (
        f"SELECT i.*, {payer} AS payer, CASE WHEN {placed} THEN {posted_ref} ELSE {junk_ref} "
        f"END AS bill_ref, {rule} AS rule, {amount} AS amount FROM ({inner}) i"
    )
    # 3. the row as intake and processing would have left it
    columns = (
        "id, shortcode_id, trans_id, trans_type, trans_time, amount, bill_ref, invoice_number, "
        "third_party_trans_id, msisdn, msisdn_form, first_name, middle_name, last_name, "
        "status, rule, reason, borrower_id, credit, error, attempts, received_at, processed_at"
    )
    statement = (
        f"WITH {d.series(count)} INSERT INTO c2b_payment ({columns}) "
        "SELECT n, CASE WHEN n % 10 = 7 THEN 2 ELSE 1 END, "
        f"'SK' || {d.hex8('(n * 2654435761) % 4294967296')}, "
        "CASE WHEN n % 10 = 7 THEN 'Buy Goods' ELSE 'Pay Bill' END, "
        f"{d.seconds_after(START, f'{seconds} - h % 4')}, amount, bill_ref, '', '', "
        "CASE WHEN form < 6 THEN substr(payer, 1, 4) || ' ***** ' || substr(payer, 10, 3) "
        f"WHEN form < 8 THEN {d.sha256('payer')} ELSE payer END, "
        "CASE WHEN form < 6 THEN 'masked' WHEN form < 8 THEN 'hashed' ELSE 'plain' END, "
        f"{d.first_word('bname')}, '', "
        f"CASE WHEN form < 6 THEN '' ELSE {d.last_word('bname')} END, "
        "status, rule, "
        "CASE WHEN status = 'unmatched' THEN 'bill reference ' || bill_ref || "
        "' names no loan or borrower; payer matches no borrower' "
        "WHEN status IN ('received', 'failed') THEN NULL "
        "ELSE 'bill reference ' || bill_ref || ' matched loan ' || loan_number || ' of ' || "
        f"bname END, CASE WHEN {placed} THEN borrower_id ELSE NULL END, 0, "
        "CASE WHEN status = 'failed' THEN 'OperationalError: database is locked' END, 1, "
        f"{d.seconds_after(START, seconds)}, "
        f"CASE WHEN status = 'received' THEN NULL ELSE "
        f"{d.seconds_after(START, f'{seconds} + 1')} END "
        f"FROM ({middle}) y"
    )
    step("shortcodes", *shortcodes)
    step(f"{count:,} c2b_payment rows", statement)
    loan_of = mix("c.id", 1) + f" % {loans} + 1"
    step(
        "repayments + payment_repayment links of placed payments",
        "INSERT INTO repayment (id, loan_id, amount, to_credit, source, reference, "
        "received_at, reversed_at, reversal_reason) "
        f"SELECT c.id, {loan_of}, c.amount, 0, 'mpesa', c.trans_id, c.trans_time, "
        "CASE WHEN c.status = 'reversed' THEN c.processed_at END, "
        "CASE WHEN c.status = 'reversed' THEN 'reassigned by an officer' END "
        "FROM c2b_payment c WHERE c.status IN ('posted', 'review', 'reversed')",
        "INSERT INTO payment_repayment (payment_id, repayment_id) "
        "SELECT id, id FROM c2b_payment WHERE status IN ('posted', 'review', 'reversed')",
    )
    if d.pg:
        step(
            "sequences",
            *(
                f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {t}))"
                for t in ("shortcode", "c2b_payment", "repayment")
            ),
        )


# ---------------------------------------------------------------------------------------------
# The filters, as TransactionFilter and as hand-written SQL


@dataclass
class Case:
    name: str
    filters: object  # TransactionFilter
    where: str  # raw SQL conditions with ? placeholders, "" for none
    params: list
    viewer: str = "admin"  # admin | officer


def cases(session, dialect: bl.Dialect, count: int) -> list[Case]:
    from sqlalchemy import text

    from lenders.days import nairobi_midnight
    from lenders.phones import canonical_phone, phone_sha256
    from lenders.references import reference_key
    from payments.transactions import TransactionFilter

    pg = dialect.pg

    def when(value: datetime):
        return value if pg else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def money(value: Decimal):
        return value if pg else float(value)

    # A payer and a loan that have payments (from the middle of the year).
    middle = count // 2
    plain = session.execute(
        text(
            "SELECT msisdn FROM c2b_payment WHERE id > :m AND msisdn_form = 'plain' "
            "AND status = 'posted' ORDER BY id LIMIT 1"
        ),
        {"m": middle},
    ).scalar()
    loan_number = session.execute(
        text(
            "SELECT l.number FROM payment_repayment pr JOIN repayment r ON "
            "r.id = pr.repayment_id JOIN loan l ON l.id = r.loan_id WHERE pr.payment_id > :m "
            "ORDER BY pr.payment_id LIMIT 1"
        ),
        {"m": middle},
    ).scalar()
    receipt = session.execute(
        text("SELECT trans_id FROM c2b_payment WHERE id = :m"), {"m": middle}
    ).scalar()
    session.rollback()
    typed_phone = f"0{plain[3:6]} {plain[6:9]} {plain[9:]}"
    number = canonical_phone(typed_phone)
    typed_loan = "loan " + str(int(loan_number.split("-")[1]))
    day_from = bl.ANCHOR - timedelta(days=120)
    day_to = day_from + timedelta(days=6)
    like = "ILIKE ? ESCAPE '\\'" if pg else "LIKE lower(?) ESCAPE '\\'"
    col = (lambda c: c) if pg else (lambda c: f"lower({c})")

    def text_search(q: str) -> tuple[str, list]:
        pattern = f"%{q}%"
        return (
            f"({col('bill_ref')} {like} OR {col('first_name')} {like} OR "
            f"{col('last_name')} {like} OR trans_id = ?)",
            [pattern, pattern, pattern, q.upper()],
        )

    phone_forms = [
        number,
        phone_sha256(number),
        f"{number[:4]} ***** {number[-3:]}",
        f"{number[:5]}****{number[-3:]}",
        f"{number[:4]}*****{number[-3:]}",
    ]
    loan_in = (  # from the loan to its payments, as the app asks
        "id IN (SELECT pr.payment_id FROM payment_repayment pr JOIN repayment r ON "
        "r.id = pr.repayment_id JOIN loan l ON l.id = r.loan_id WHERE l.reference_key = ?)"
    )
    name_where, name_params = text_search("Kamau")
    return [
        Case("none", TransactionFilter(), "", []),
        Case(
            "status=unmatched", TransactionFilter(status="unmatched"), "status = ?", ["unmatched"]
        ),
        Case("status=failed", TransactionFilter(status="failed"), "status = ?", ["failed"]),
        Case(
            f"phone {typed_phone!r}",
            TransactionFilter(phone=typed_phone),
            "(" + " OR ".join(["msisdn = ?"] * 5) + ")",
            phone_forms,
        ),
        Case(
            "amount 1000-1500",
            TransactionFilter(amount_min=Decimal("1000"), amount_max=Decimal("1500")),
            "amount >= ? AND amount <= ?",
            [money(Decimal("1000")), money(Decimal("1500"))],
        ),
        Case(
            "amount 123000-123500 (none)",
            TransactionFilter(amount_min=Decimal("123000"), amount_max=Decimal("123500")),
            "amount >= ? AND amount <= ?",
            [money(Decimal("123000")), money(Decimal("123500"))],
        ),
        Case(
            f"dates {day_from}..{day_to}",
            TransactionFilter(date_from=day_from, date_to=day_to),
            "received_at >= ? AND received_at < ?",
            [
                when(nairobi_midnight(day_from)),
                when(nairobi_midnight(day_to + timedelta(days=1))),
            ],
        ),
        Case(
            f"loan {typed_loan!r}",
            TransactionFilter(loan=typed_loan),
            loan_in,
            [reference_key(typed_loan)],
        ),
        Case("text 'Kamau'", TransactionFilter(q="Kamau"), name_where, name_params),
        Case(  # a receipt number is looked up by its index, not searched in names
            f"text receipt {receipt.lower()!r}",
            TransactionFilter(q=receipt.lower()),
            "trans_id = ?",
            [receipt.upper()],
        ),
        Case("officer viewer, none", TransactionFilter(), "", [], viewer="officer"),
        Case(
            "officer viewer, status=posted",
            TransactionFilter(status="posted"),
            "status = ?",
            ["posted"],
            viewer="officer",
        ),
    ]


COLUMNS = (
    "id, received_at, trans_id, first_name, msisdn, msisdn_form, bill_ref, amount, status, rule"
)
OPEN = "status IN ('received', 'unmatched', 'failed')"
OFFICER = 2  # the officer viewer's staff id
PORTFOLIO = (
    "status NOT IN ('received', 'unmatched', 'failed') AND EXISTS (SELECT 1 FROM "
    "payment_repayment pr, repayment r, loan l WHERE pr.payment_id = c2b_payment.id "
    "AND r.id = pr.repayment_id AND l.id = r.loan_id AND l.officer_id = ?)"
)


def raw_page(raw, dialect: bl.Dialect, case: Case, before_id: int | None, limit: int = 51):
    """The page as the list shows it, by hand: its payments' columns and, in the same
    statement, the numbers of the loans each is posted to (reversed postings left out)."""

    def keyset(visibility: str, visibility_params: list) -> tuple[str, list]:
        where = [w for w in (visibility, case.where) if w]
        params = [*visibility_params, *case.params]
        if before_id:
            where.append("id < ?")
            params.append(before_id)
        sql = f"SELECT {COLUMNS} FROM c2b_payment"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return sql + f" ORDER BY id DESC LIMIT {limit}", params

    if case.viewer == "admin":
        page, params = keyset("", [])
    else:  # the officer: the newest of two disjoint keyset pages, as the app asks
        status = case.filters.status
        unplaced, unplaced_params = keyset(OPEN, [])
        placed, placed_params = keyset(PORTFOLIO, [OFFICER])
        if status:
            page, params = (
                (unplaced, unplaced_params)
                if status in ("received", "unmatched", "failed")
                else (placed, placed_params)
            )
        else:
            page = (
                f"SELECT * FROM (SELECT * FROM ({unplaced}) a UNION ALL "
                f"SELECT * FROM ({placed}) b) v ORDER BY id DESC LIMIT {limit}"
            )
            params = [*unplaced_params, *placed_params]
    sql = (
        f"SELECT p.*, l.number FROM ({page}) p "
        "LEFT JOIN payment_repayment pr ON pr.payment_id = p.id "
        "LEFT JOIN repayment r ON r.id = pr.repayment_id AND r.reversed_at IS NULL "
        "LEFT JOIN loan l ON l.id = r.loan_id ORDER BY p.id DESC, r.id"
    )
    if dialect.pg:
        sql = sql.replace("?", "%s")
    cursor = raw.cursor()
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    cursor.close()
    if not dialect.pg:  # text and floats: make the time and money the list formats
        rows = [
            (
                r[0],
                datetime.fromisoformat(r[1]).replace(tzinfo=UTC),
                *r[2:7],
                Decimal(f"{r[7]:.2f}"),
            )
            + r[8:]
            for r in rows
        ]
    return sql, params, rows


def raw_lines(rows) -> list[tuple[int, tuple[str, ...]]]:
    """(payment id, its loan numbers) per payment of a raw page, newest first."""
    out: list[tuple[int, list[str]]] = []
    for row in rows:
        if not out or out[-1][0] != row[0]:
            out.append((row[0], []))
        if row[-1] is not None:
            out[-1][1].append(row[-1])
    return [(payment_id, tuple(numbers)) for payment_id, numbers in out][:50]


# ---------------------------------------------------------------------------------------------
# Timing


def median_time(fn, repeat: int, budget: float) -> tuple[float, float, object]:
    """(median, min) seconds of ``repeat`` calls after one untimed call, within ``budget``."""
    result = fn()
    times = []
    deadline = time.perf_counter() + budget
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return statistics.median(times), min(times), result


def run(url: str, args) -> list[dict]:
    bl.use_app_env(url)
    from flask_login import FlaskLoginClient  # noqa: F401 - only to be sure flask-login is there
    from sqlalchemy import select

    from app import create_app
    from lenders.extensions import db
    from lenders.models import StaffUser
    from payments.transactions import find_payments

    app = create_app({"SQLALCHEMY_DATABASE_URI": bl.normalise_url(url), "TESTING": False})
    dialect = bl.Dialect("postgresql" if url.startswith("postgres") else "sqlite")
    results = []
    with app.app_context():
        total = db.session.execute(
            select(db.func.count()).select_from(db.metadata.tables["c2b_payment"])
        ).scalar()
        print(f"c2b_payment rows: {total:,}")
        all_cases = cases(db.session, dialect, args.payments)
        viewers = {
            "admin": db.session.get(StaffUser, 1),
            "officer": db.session.get(StaffUser, 2),
        }
        # The raw side's DB-API connection comes from the app's own engine: the same
        # connection settings (SQLite's pragmas and page cache), no SQLAlchemy in the way.
        raw_connection = db.engine.raw_connection()
        raw = raw_connection.driver_connection
        if not dialect.pg:
            raw.isolation_level = None  # autocommit: reads see the latest data

        print(f"load average: {bl.load_average()}")
        print(
            f"\nfind_payments vs raw SQL, median of {args.repeat} after one warm call, ms "
            f"({'postgresql' if dialect.pg else 'sqlite'}; goal app <= {GOAL_RATIO:.0f}x raw)"
        )
        print(f"  (budget ~{args.budget:.0f} s per filter: slow filters get fewer repetitions)")
        # The app's side: a session whose transaction is already open, as in a request
        # whose login check has read the user before the page's query (the pool's checkout,
        # pre-ping and the transaction's start belong to that check, not to the page; the
        # request's teardown ends it). The data does not change while this runs.
        from sqlalchemy.orm import Session

        page_connection = db.engine.connect()
        page_session = Session(bind=page_connection)
        page_session.get(StaffUser, 1)
        for case in all_cases:
            viewer = viewers[case.viewer]

            def app_page(before=None, case=case, viewer=viewer):
                found, cursor = find_payments(page_session, viewer, case.filters, before)
                for row in found:  # every field the template reads
                    _ = (row.received_at, row.trans_id, row.first_name, row.msisdn)
                    _ = (row.msisdn_form, row.bill_ref, row.amount, row.status, row.rule)
                    _ = ", ".join(row.loans)
                return ([(row.id, row.loans) for row in found], cursor)

            started = time.perf_counter()
            app1, _, (lines1, cursor) = median_time(app_page, args.repeat, args.budget / 2)
            raw1, _, (sql1, params1, rows1) = median_time(
                lambda case=case: raw_page(raw, dialect, case, None), args.repeat, args.budget / 2
            )
            if raw_lines(rows1) != lines1:
                print(f"  WARNING {case.name}: raw SQL and find_payments disagree on page 1")
            app2 = raw2 = None
            if cursor:
                app2, _, (lines2, _) = median_time(
                    lambda cursor=cursor: app_page(cursor), args.repeat, args.budget / 4
                )
                raw2, _, (_, _, rows2) = median_time(
                    lambda case=case, cursor=cursor: raw_page(raw, dialect, case, cursor),
                    args.repeat,
                    args.budget / 4,
                )
                if raw_lines(rows2) != lines2:
                    print(f"  WARNING {case.name}: raw SQL and find_payments disagree on page 2")
            results.append(
                {
                    "case": case,
                    "rows": len(lines1),
                    "app1": app1,
                    "raw1": raw1,
                    "app2": app2,
                    "raw2": raw2,
                    "sql": sql1,
                    "params": params1,
                    "seconds": time.perf_counter() - started,
                }
            )
            print(
                f"  {case.name}: {len(lines1)} rows, app {app1 * 1000:.2f} ms, raw "
                f"{raw1 * 1000:.2f} ms"
                + (f"; page 2 app {app2 * 1000:.2f} ms, raw {raw2 * 1000:.2f} ms" if app2 else "")
            )

        print("\nTransactions page, first page and keyset page 2, ms")
        header = (
            "filter",
            "rows",
            "app p1",
            "raw p1",
            "ratio",
            "app p2",
            "raw p2",
            "ratio",
            "goal",
        )
        table = []
        for r in results:
            ratio1 = r["app1"] / r["raw1"]
            ratio2 = r["app2"] / r["raw2"] if r["app2"] else None
            ok = ratio1 <= GOAL_RATIO and (ratio2 is None or ratio2 <= GOAL_RATIO)
            table.append(
                (
                    r["case"].name,
                    r["rows"],
                    f"{r['app1'] * 1000:.2f}",
                    f"{r['raw1'] * 1000:.2f}",
                    f"{ratio1:.1f}x",
                    f"{r['app2'] * 1000:.2f}" if r["app2"] else "-",
                    f"{r['raw2'] * 1000:.2f}" if r["raw2"] else "-",
                    f"{ratio2:.1f}x" if ratio2 else "-",
                    "PASS" if ok else "FAIL",
                )
            )
        bl.print_table(header, table)
        print(
            "app = find_payments in an open transaction, every field the list shows read back;"
            "\nraw = the same page by hand on the DB-API cursor: the same columns, WHERE, keyset "
            "and UNION ALL, with the loan numbers in the same statement"
        )

        # The whole request, through the test client, logged in as the admin.
        print("\nHTTP GET through the Flask test client (admin; login check, query, template)")
        client = app.test_client()
        admin = viewers["admin"]
        with client.session_transaction() as session:
            now = datetime.now(UTC).timestamp()
            session["_user_id"] = admin.get_id()
            session["_fresh"] = True
            session["login_at"] = now
            session["seen_at"] = now
        by_name = {r["case"].name: r for r in results}
        http_rows = []
        for name, query in (("none", ""), ("status=unmatched", "?status=unmatched")):
            path = "/payments/transactions/" + query

            def get(path=path, headers=None):
                response = client.get(path, headers=headers or {})
                # The request ran inside this script's app context, which stays: end its
                # session as the request's own teardown would have.
                db.session.remove()
                if response.status_code != 200:
                    raise SystemExit(f"GET {path}: {response.status_code}")
                return len(response.data)

            full, _, size = median_time(get, args.repeat, args.budget / 2)
            fragment, _, fsize = median_time(
                lambda get=get: get(headers={"HX-Request": "true", "HX-Target": "results"}),
                args.repeat,
                args.budget / 2,
            )
            app1 = by_name[name]["app1"]
            http_rows.append(
                (
                    name,
                    f"{full * 1000:.1f}",
                    f"{size / 1024:.0f} KiB",
                    f"{fragment * 1000:.1f}",
                    f"{app1 * 1000:.1f}",
                    f"{(full - app1) * 1000:.1f}",
                )
            )
        bl.print_table(
            (
                "filter",
                "full page ms",
                "size",
                "HTMX #results ms",
                "find_payments ms",
                "request+render ms",
            ),
            http_rows,
        )

        slow = [r for r in results if r["raw1"] * 1000 >= args.explain_over_ms]
        for r in slow:
            print(f"\nplan of the raw first page, {r['case'].name} ({r['raw1'] * 1000:.0f} ms):")
            print("  " + r["sql"])
            print(f"  parameters: {r['params']!r}")
            print("  " + bl.explain(raw, r["sql"], r["params"]).replace("\n", "\n  "))
            if dialect.pg:
                raw.rollback()
        if args.try_indexes:
            what_ifs(raw, dialect, all_cases, results, args)
        raw_connection.close()
        page_session.close()
        page_connection.close()
        db.session.remove()
        db.engine.dispose()
    return results


def what_ifs(raw, dialect: bl.Dialect, all_cases: list[Case], results: list[dict], args):
    """Candidate fixes for slow filters, tried on the raw page: an index, or a rewrite."""
    by_name = {r["case"].name: r for r in results}

    def find(prefix: str) -> Case | None:
        return next((c for c in all_cases if c.name.startswith(prefix)), None)

    loan_in = (
        "id IN (SELECT pr.payment_id FROM loan l JOIN repayment r ON r.loan_id = l.id "
        "JOIN payment_repayment pr ON pr.repayment_id = r.id WHERE l.reference_key = ?)"
    )
    trials = []
    for prefix, index, rewrite in (
        ("status=unmatched", "c2b_payment (status, id)", None),
        ("status=failed", "c2b_payment (status, id)", None),
        ("phone", "c2b_payment (msisdn)", None),
        ("dates", "c2b_payment (received_at)", None),
        ("loan", None, loan_in),
        ("text receipt", "c2b_payment (trans_id)", "trans_id = ?"),
    ):
        case = find(prefix)
        if case is not None:
            trials.append((case, index, rewrite))
    rows = []
    for case, index, rewrite in trials:
        trial = case
        if rewrite:
            params = case.params[-1:] if case.name.startswith("text") else case.params
            trial = Case(case.name, case.filters, rewrite, params)
        name = "bench_whatif_" + (index or "(none)").split("(")[1].rstrip(")").replace(", ", "_")
        cursor = raw.cursor()
        if index:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")  # left by an interrupted run
            cursor.execute(f"CREATE INDEX {name} ON {index}")
            if dialect.pg:
                cursor.execute("ANALYZE c2b_payment")
                raw.commit()
        try:
            after, _, (sql, params, _) = median_time(
                lambda trial=trial: raw_page(raw, dialect, trial, None),
                args.repeat,
                args.budget / 2,
            )
            plan = bl.explain(raw, sql, params)
            if dialect.pg:
                raw.rollback()
        finally:
            if index:
                cursor.execute(f"DROP INDEX {name}")
                if dialect.pg:
                    raw.commit()
            cursor.close()
        change = (f"CREATE INDEX ON {index}" if index else "") + (
            ("; " if index else "") + f"WHERE {rewrite[:60]}…" if rewrite else ""
        )
        keys = ("Scan", "SCAN", "SEARCH", "Sort", "TEMP", "Join", "Loop")
        first_plan = " / ".join(
            line.strip().lstrip("-> ") for line in plan.splitlines() if any(k in line for k in keys)
        )[:130]
        rows.append(
            (
                case.name,
                change,
                f"{by_name[case.name]['raw1'] * 1000:.1f}",
                f"{after * 1000:.1f}",
                first_plan,
            )
        )
    print("\nwhat if (raw first page; the candidate index is dropped again afterwards)")
    bl.print_table(("filter", "change", "raw ms now", "raw ms with it", "plan with it"), rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"checkout under test: {bl.ROOT} ({bl.describe_checkout()})")
    print(f"load average: {bl.load_average()}")
    tmp = None
    try:
        if args.database_url:
            url = bl.normalise_url(args.database_url)
        elif args.sqlite_file:
            url = f"sqlite:///{args.sqlite_file.resolve()}"
        else:
            tmp = Path(tempfile.mkdtemp(prefix="marejesho-transactions-"))
            url = f"sqlite:///{tmp / 'payments.db'}"
        build(url, args)
        results = run(url, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    backend = "postgresql" if url.startswith("postgres") else "sqlite"
    worst = max(results, key=lambda r: r["app1"])
    failing = [
        r["case"].name
        for r in results
        if r["app1"] / r["raw1"] > GOAL_RATIO or (r["app2"] and r["app2"] / r["raw2"] > GOAL_RATIO)
    ]
    print(
        f"\nSUMMARY transactions_page {backend} payments={args.payments} "
        f"slowest={worst['case'].name!r} {worst['app1'] * 1000:.0f}ms "
        f"ratio-goal(<= {GOAL_RATIO:.0f}x) failing: {failing or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
