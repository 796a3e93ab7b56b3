"""Benchmark: C2B confirmations per second through gunicorn, against the bare-Flask floor.

Not a test: it prints figures. Set-up, as a lender would do it (not timed): a fresh database
(the embedded default, a SQLite file in a temp dir; or PostgreSQL with --database-url),
`flask --app app db upgrade`, `flask --app app payments add-shortcode 600984 --name Bench`,
and `flask --app app lenders import-loans` of a generated book of --loans loans, so that
matching and posting have real work. No REDIS_URL: each confirmation is journalled and
acknowledged by the request, shipped to the database by the process's journal shipper (in
batches, while the load runs: its CPU is in the figures), and processed (matched and
posted) in-process, on the gunicorn worker's job thread once the worker is idle, as the
embedded default does. After the load, the journal's backlog is printed and waited for
(payments/journal.py; the journal is in the run's temporary directory).

Then, for each worker mode (gunicorn sync workers; gthread workers with --threads), it serves
first the floor (bench/floor_app.py: the same route, parse the JSON, answer "Accepted") and
then Marejesho (`app:create_app()`) with the same gunicorn settings, and drives each with
--clients concurrent keep-alive HTTP/1.1 clients (asyncio, raw sockets, one process) sending
distinct realistic Daraja confirmation bodies (a unique TransID each; exact, sloppy and
unknown account numbers, national IDs and phones as account, masked/hashed/plain MSISDNs,
unknown payers) for --warmup then --duration seconds. It prints requests/s, p50/p99 latency,
errors, gunicorn's CPU per request and the ratio app/floor (goal: >= 0.5), then checks the
database: every acknowledged confirmation stored exactly once (c2b_payment rows == 200
answers, one callback_log each) and how they ended (posted / unmatched / received / failed).
For the embedded app, gunicorn keeps running after the load stops until the job threads have
processed the burst's backlog (at most --drain-timeout), and that time is printed.

A third target, "app+redis", serves the app with REDIS_URL pointing at a private
redis-server this script starts on a loopback port (memory only, stopped at the end): the
production shape, where the request journals and acknowledges and the shipper stores (no
RQ worker runs, so those rows stay "received"). --no-redis skips it. Before the HTTP runs,
--profile N posts N confirmations in-process through the Flask test client and prints where
one confirmation's time goes (keep, ship, match, post, SMS receipt and notices; wake).

    .venv/bin/python bench/confirmations.py                    # SQLite, sync and gthread
    .venv/bin/python bench/confirmations.py \\
        --database-url postgresql+psycopg://mj:mj@127.0.0.1/mj_bench2
    .venv/bin/python bench/confirmations.py --modes sync --duration 10 --clients 4
    .venv/bin/python bench/confirmations.py --modes sync --rounds 3 --drain-timeout 1

--rounds N repeats the floor/app pair N times (fresh servers, same database) and judges the
goal on the median ratio: on a shared 2-core machine one pair moves 10 % either way.

The PostgreSQL database's public schema is DROPPED and recreated (its name must contain
"bench"). Only loopback traffic; gunicorn is stopped at the end of each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import benchlib as bl

# The goals, against the bare-Flask floor in the same run under the same gunicorn
# settings: the embedded default (SQLite, no Redis) >= 0.6; the production shape
# (PostgreSQL + Redis, run with --database-url) >= 0.7. Validation answered at p99 < 50 ms
# at --validation-rate requests a second during the full confirmation load.
GOALS = {"app": 0.6, "app+redis": 0.7}
GOAL_VALIDATION_P99_MS = 50.0
NAIROBI = ZoneInfo("Africa/Nairobi")
SHORTCODE = "600984"
JUNK_REFS = ("", "PAYMENT", "school fees", "mama mboga", "rent", "LOAN", "pay", "X")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--loans", type=int, default=3000, help="loans imported (3000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first (3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (4)")
    parser.add_argument(
        "--modes",
        default="sync,gthread",
        help="comma-separated worker modes to run: sync, gthread (default both)",
    )
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL instead of SQLite")
    parser.add_argument("--port", type=int, default=0, help="first port (default: a free one)")
    parser.add_argument("--seed", type=int, default=600984)
    parser.add_argument(
        "--profile",
        type=int,
        default=200,
        metavar="N",
        help="before the HTTP runs, post N confirmations in-process (Flask test client) and "
        "print where one confirmation's time goes, under cProfile (200; 0 skips)",
    )
    parser.add_argument(
        "--no-redis",
        action="store_true",
        help="skip the third target: the app with REDIS_URL pointing at a private "
        "redis-server started for the run (journal, store and wake only, no worker: the "
        "production shape of the endpoint; rows stay 'received')",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=900,
        metavar="SECONDS",
        help="after the embedded app's run, wait at most this long for its job threads to "
        "process the backlog before stopping it (900)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="run the floor and the app N times, one after the other (fresh servers each "
        "time, on the same database), and judge the goal on the median of the N ratios: "
        "on a shared machine one pair of runs can be 10 %% off either way (1)",
    )
    parser.add_argument(
        "--targets",
        default="app,app+redis",
        help="comma-separated app targets beside the floor: app (embedded default), "
        "app+redis (REDIS_URL set; the production shape on PostgreSQL) (default both)",
    )
    parser.add_argument(
        "--validation-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="also send R validation requests a second, on their own connection, during "
        "the app targets' runs, and report their latency (goal p99 < 50 ms at 200)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--allow-any-database", action="store_true")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not set(args.targets) <= {"app", "app+redis"}:
        parser.error("--targets takes app and/or app+redis")
    if not set(args.modes) <= {"sync", "gthread"} or not args.modes:
        parser.error("--modes takes sync and/or gthread")
    if args.clients < 1 or args.duration <= 0 or args.loans < 10:
        parser.error("need at least 1 client, a positive duration and 10 loans")
    if not 1 <= args.rounds <= 7:
        parser.error("--rounds takes 1 to 7")
    if args.warmup + args.duration > 120:
        parser.error("keep --warmup + --duration under 120 s per run")
    bl.check_resettable(parser, args.database_url, args.allow_any_database)
    return args


# ---------------------------------------------------------------------------------------------
# Confirmation bodies


@dataclass
class Payer:
    loan_number: str
    national_id: str
    first_name: str
    last_name: str
    phones: list[str]


def load_payers(url: str) -> list[Payer]:
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT l.number, b.national_id, b.name, p.number FROM loan l "
                "JOIN borrower b ON b.id = l.borrower_id "
                "JOIN borrower_phone p ON p.borrower_id = b.id WHERE l.status = 'active' "
                "ORDER BY l.id, p.id"
            )
        ).all()
    engine.dispose()
    payers: dict[str, Payer] = {}
    for number, national_id, name, phone in rows:
        if number not in payers:
            parts = name.split()
            payers[number] = Payer(number, national_id, parts[0], parts[-1], [])
        payers[number].phones.append(phone)
    return list(payers.values())


class Bodies:
    """Distinct, realistic confirmation bodies: a unique TransID each."""

    def __init__(self, payers: list[Payer], seed: int):
        self.rng = random.Random(seed)
        self.payers = payers
        self.templates = [self._template(n) for n in range(20_000)]
        self.kinds = Counter()
        self.counter = 0
        self.prefix = "SA"

    def _template(self, n: int) -> tuple[str, bytes]:
        rng = self.rng
        payer = rng.choice(self.payers)
        kind = rng.choices(
            ("exact_ref", "sloppy_ref", "national_id", "phone_ref", "payer_only", "unknown"),
            weights=(40, 20, 8, 7, 15, 10),
        )[0]
        phone = rng.choice(payer.phones)
        first, last = payer.first_name, payer.last_name
        if kind == "exact_ref":
            ref = payer.loan_number
        elif kind == "sloppy_ref":
            ref = bl.sloppy_reference(payer.loan_number, rng)
        elif kind == "national_id":
            ref = payer.national_id
        elif kind == "phone_ref":
            ref = bl.plain_forms(phone, rng)
        else:
            ref = rng.choice(JUNK_REFS)
        if kind == "unknown":
            phone = bl.unknown_phone(n)
            first, last = rng.choice(bl.FIRST_NAMES), rng.choice(bl.SURNAMES)
        form = rng.choices(("masked", "hashed", "plain"), weights=(60, 20, 20))[0]
        if form == "masked":  # register v2 in production: FirstName only
            msisdn, middle, last = bl.masked_msisdn(phone, rng), "", ""
        elif form == "hashed":
            msisdn, middle = bl.sha256_hex(phone), ""
        else:
            msisdn, middle = phone, rng.choice(("", "", bl.MIDDLE_NAMES[n % 8]))
        amount = rng.randrange(5, 300) * 10
        body = {
            "TransactionType": "Pay Bill",
            "TransID": "@@TRANSID@@",
            "TransTime": "@@TRANSTIME@@",
            "TransAmount": f"{amount}.00" if rng.random() < 0.7 else str(amount),
            "BusinessShortCode": SHORTCODE,
            "BillRefNumber": ref,
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": msisdn,
            "FirstName": first,
            "MiddleName": middle,
            "LastName": last,
        }
        return kind, json.dumps(body).encode()

    def start_run(self, letter: str) -> None:
        self.prefix, self.counter = "S" + letter, 0

    def next(self) -> tuple[str, bytes]:
        self.counter += 1
        trans_id = f"{self.prefix}{self.counter:08X}"
        kind, template = self.templates[self.counter % len(self.templates)]
        self.kinds[kind] += 1
        stamp = datetime.now(NAIROBI).strftime("%Y%m%d%H%M%S").encode()
        return trans_id, template.replace(b"@@TRANSID@@", trans_id.encode()).replace(
            b"@@TRANSTIME@@", stamp
        )


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Load:
    started: float = 0.0
    measure_from: float = 0.0
    measure_to: float = 0.0
    latencies: list[float] = field(default_factory=list)  # completed inside the window
    statuses: Counter = field(default_factory=Counter)  # every answer, warm-up included
    acknowledged: set[str] = field(default_factory=set)  # 200 with ResultCode 0
    unanswered: list[str] = field(default_factory=list)  # connection failed: fate unknown
    errors: Counter = field(default_factory=Counter)
    measured_errors: int = 0
    connections: int = 0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    validations: list[float] = field(default_factory=list)  # inside the window, seconds
    validation_errors: int = 0

    @property
    def measured(self) -> int:
        return len(self.latencies)

    @property
    def seconds(self) -> float:
        return self.measure_to - self.measure_from

    @property
    def rate(self) -> float:
        return self.measured / self.seconds if self.seconds else 0.0


async def drive(
    port: int,
    path: str,
    bodies: Bodies,
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
    validation_rate: float = 0.0,
) -> Load:
    load = Load()
    clock = time.perf_counter
    state = {"stop": False}
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Apache-HttpClient/4.5\r\n"
        "Content-Type: application/json\r\nAccept: */*\r\nContent-Length: "
    ).encode()

    async def client() -> None:
        reader = writer = None
        while not state["stop"]:
            trans_id, body = bodies.next()
            request = head + str(len(body)).encode() + b"\r\n\r\n" + body
            sent = clock()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    load.connections += 1
                writer.write(request)
                header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                lines = header.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                fields = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                answer = await reader.readexactly(int(fields.get("content-length", "0")))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                load.unanswered.append(trans_id)
                load.errors[type(exc).__name__] += 1
                if load.measure_from <= sent < (load.measure_to or float("inf")):
                    load.measured_errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            done = clock()
            load.statuses[status] += 1
            if status == 200:
                try:
                    if json.loads(answer).get("ResultCode") == 0:
                        load.acknowledged.add(trans_id)
                except ValueError:
                    pass
            if load.measure_from <= done and (not load.measure_to or done < load.measure_to):
                if status == 200:
                    load.latencies.append(done - sent)
                else:
                    load.measured_errors += 1
            if fields.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    vhead = head.replace(path.encode(), path.replace("/confirmation", "/validation").encode())

    async def validator() -> None:
        """Validation requests at a steady rate on one keep-alive connection each, as
        Safaricom calls validation beside the confirmations."""
        reader = writer = None
        pause = 1.0 / validation_rate
        next_at = clock()
        while not state["stop"]:
            next_at += pause
            _, body = bodies.next()
            sent = clock()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(vhead + str(len(body)).encode() + b"\r\n\r\n" + body)
                header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                lines = header.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                fields = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                await reader.readexactly(int(fields.get("content-length", "0")))
                ok = status == 200
                if fields.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
                if writer is not None:
                    writer.close()
                reader = writer = None
            done = clock()
            if load.measure_from <= done and (not load.measure_to or done < load.measure_to):
                if ok:
                    load.validations.append(done - sent)
                else:
                    load.validation_errors += 1
            await asyncio.sleep(max(0.0, next_at - clock()))
        if writer is not None:
            writer.close()

    load.started = clock()
    load.measure_from = load.started + warmup
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    if validation_rate:
        tasks += [
            asyncio.create_task(validator()) for _ in range(max(1, int(validation_rate // 50)))
        ]
        validation_rate /= max(1, int(validation_rate // 50))
    await asyncio.sleep(warmup)
    cpu0, server0 = process_cpu(), server_cpu(server_pid)
    await asyncio.sleep(duration)
    load.measure_to = clock()
    cpu1, server1 = process_cpu(), server_cpu(server_pid)
    load.client_cpu = cpu1 - cpu0
    load.server_cpu = server1 - server0 if server0 is not None and server1 is not None else None
    state["stop"] = True
    await asyncio.wait_for(asyncio.gather(*tasks), 90)  # in-flight requests finish
    return load


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(master: int) -> float | None:
    """User + system CPU seconds of a gunicorn master and its workers (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [master]
    try:
        with open(f"/proc/{master}/task/{master}/children") as stream:
            pids += [int(p) for p in stream.read().split()]
    except OSError:
        return None
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stream:
                parts = stream.read().rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


# ---------------------------------------------------------------------------------------------
# gunicorn


def free_port(preferred: int = 0) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", preferred))
        return sock.getsockname()[1]


def start_gunicorn(target: str, port: int, mode: str, args, env: dict, log: Path):
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(args.workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--backlog",
        "2048",
        "--log-level",
        "warning",
        "--error-logfile",
        str(log),
    ]
    if mode == "gthread":
        cmd += ["--worker-class", "gthread", "--threads", str(args.threads)]
    else:
        cmd += ["--worker-class", "sync"]
    if target == "floor":
        cmd += ["--chdir", str(Path(__file__).resolve().parent), "floor_app:app"]
    else:
        cmd += ["--chdir", str(bl.ROOT), "app:create_app()"]
    process = subprocess.Popen(cmd, env=env, cwd=bl.ROOT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited {process.returncode}; see {log}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1.1"):
                    break
        except OSError:
            time.sleep(0.2)
    else:
        stop(process)
        raise SystemExit(f"gunicorn did not answer within 60 s; see {log}")
    wait_for_workers(process.pid, args.workers)
    return process


def wait_for_workers(master: int, workers: int) -> None:
    """Give every worker the time to import the app, so the warm-up measures no start-up."""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with open(f"/proc/{master}/task/{master}/children") as stream:
                if len(stream.read().split()) >= workers:
                    break
        except OSError:
            break
        time.sleep(0.2)
    time.sleep(1.5)


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str] | None:
    """A private, memory-only redis-server on a free loopback port, or None."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port(0)
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    stop(process)
    return None


def queued_jobs(redis_url: str) -> int | None:
    try:
        from redis import Redis

        return Redis.from_url(redis_url).llen("rq:queue:marejesho")
    except Exception:  # noqa: BLE001 - reported as unknown
        return None


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the master we started; it stops its workers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# In-process profile

PROFILED = (
    ("payments/confirmations.py", "_confirm", "the whole confirmation (its own WSGI path)"),
    ("payments/callbacks.py", "find_shortcode", "  find the shortcode by token"),
    ("payments/journal.py", "keep", "  keep: on this host's journal, synced"),
    ("payments/journal.py", "ship", "  ship: the journal's batch to the database"),
    ("lenders/jobs.py", "wake", "  wake the workers (in-process: runs the drains)"),
    ("payments/jobs.py", "post_received_payments", "    the payments drain (a batch)"),
    ("payments/matching.py", "identify", "      identify the parties"),
    ("payments/posting.py", "flush", "      write the batch"),
    ("payments/jobs.py", "send_queued_messages", "    the messages drain"),
)


def profile_inprocess(
    url: str, path: str, bodies: Bodies, count: int, redis_url: str | None = None
) -> None:
    """Post ``count`` confirmations through the Flask test client, once plainly (timed) and
    once under cProfile, and say where the time of one goes."""
    import cProfile
    import pstats

    from sqlalchemy import event

    bl.use_app_env(url)
    from app import create_app
    from lenders.extensions import db

    # Jobs inline (not on the job thread), so that cProfile, which follows one thread,
    # sees where processing's time goes too.
    app = create_app({"REDIS_URL": redis_url, "JOBS_IN_BACKGROUND": False})
    client = app.test_client()
    bodies.start_run("Q" if redis_url else "P")  # TransIDs of their own: no duplicates
    statements = {"n": 0}

    def post():
        _, body = bodies.next()
        response = client.post(path, data=body, content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"in-process confirmation answered {response.status_code}")

    for _ in range(20):  # warm
        post()
    with app.app_context():
        engine = db.engine

    def count_statement(*_args, **_kw):
        statements["n"] += 1

    event.listen(engine, "before_cursor_execute", count_statement)
    started = time.perf_counter()
    for _ in range(count):
        post()
    plain = (time.perf_counter() - started) / count
    event.remove(engine, "before_cursor_execute", count_statement)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        post()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    print(
        "\nin-process (Flask test client, one thread, no HTTP"
        + (", REDIS_URL set: journal, store, wake" if redis_url else ", no REDIS_URL: jobs inline")
        + f"): {1000 * plain:.1f} ms per confirmation, {statements['n'] / count:.0f} SQL "
        "statements each through SQLAlchemy (shipping, posting and messages: a batch of one "
        "here, as jobs run inline; plus the journal's own SQLite)"
    )
    rows = []
    for file, function, label in PROFILED:
        total = sum(
            value[3]
            for (filename, _, name), value in stats.items()
            if filename.endswith(file) and name == function
        )
        rows.append((label, f"{1000 * total / count:.1f}"))
    bl.print_table(("part (under cProfile, so slower than above)", "ms per confirmation"), rows)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# ---------------------------------------------------------------------------------------------
# The database check


def wait_for_processing(url: str, prefix: str, timeout: float) -> dict:
    """After the load stops, with the server still up: how long its job threads take to
    match and post the payments the burst left in ``received``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    query = text("SELECT count(*) FROM c2b_payment WHERE trans_id LIKE :p AND status = 'received'")
    started = time.perf_counter()
    with engine.connect() as connection:
        backlog = left = connection.execute(query, {"p": prefix + "%"}).scalar()
        while left and time.perf_counter() - started < timeout:
            time.sleep(0.5)
            left = connection.execute(query, {"p": prefix + "%"}).scalar()
            connection.rollback()
    engine.dispose()
    seconds = time.perf_counter() - started
    return {
        "backlog": backlog,
        "left": left,
        "seconds": seconds,
        "rate": (backlog - left) / seconds if seconds else 0.0,
    }


def journalled(folder: Path) -> int:
    """Confirmations acknowledged but not yet shipped to the database (payments/journal.py)."""
    import sqlite3

    total = 0
    for path in folder.glob("confirmations*.db"):
        connection = sqlite3.connect(path, timeout=10)
        try:
            total += connection.execute("SELECT count(*) FROM confirmation").fetchone()[0]
        except sqlite3.OperationalError:
            pass
        finally:
            connection.close()
    return total


def wait_for_journal(folder: Path, timeout: float = 120.0) -> tuple[int, float, int]:
    """How many waited in the journal when the load stopped, how long until none did, and
    how many were left at the timeout (the check below counts only the database)."""
    started = time.perf_counter()
    first = left = journalled(folder)
    while left and time.perf_counter() - started < timeout:
        time.sleep(0.05)
        left = journalled(folder)
    return first, time.perf_counter() - started, left


def check_database(url: str, prefix: str, load: Load) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(bl.normalise_url(url))
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT trans_id, status, rule FROM c2b_payment WHERE trans_id LIKE :p"),
            {"p": prefix + "%"},
        ).all()
        logs = connection.execute(
            text(
                "SELECT count(*), count(DISTINCT cl.payment_id) FROM callback_log cl "
                "JOIN c2b_payment p ON p.id = cl.payment_id WHERE p.trans_id LIKE :p"
            ),
            {"p": prefix + "%"},
        ).one()
        repayments = connection.execute(
            text(
                "SELECT count(*) FROM payment_repayment pr JOIN c2b_payment p "
                "ON p.id = pr.payment_id WHERE p.trans_id LIKE :p"
            ),
            {"p": prefix + "%"},
        ).scalar()
        errors = connection.execute(
            text(
                "SELECT error, count(*) FROM c2b_payment WHERE trans_id LIKE :p "
                "AND status = 'failed' GROUP BY error ORDER BY count(*) DESC"
            ),
            {"p": prefix + "%"},
        ).all()
    engine.dispose()
    stored = [r[0] for r in rows]
    stored_set = set(stored)
    return {
        "rows": len(stored),
        "distinct": len(stored_set),
        "acknowledged": len(load.acknowledged),
        "acknowledged_missing": len(load.acknowledged - stored_set),
        "stored_unacknowledged": len(stored_set - load.acknowledged),
        "unanswered": len(load.unanswered),
        "logs": logs[0],
        "logged_payments": logs[1],
        "repayment_links": repayments,
        "statuses": Counter(r[1] for r in rows),
        "rules": Counter(r[2] or "-" for r in rows),
        "failed_errors": errors[:3],
    }


# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    target: str
    load: Load
    check: dict | None = None
    drain: dict | None = None
    round: int = 1
    validation: dict | None = None


def summary(values: list[float]) -> dict:
    return bl.summary_ms(values)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"checkout under test: {bl.ROOT} ({bl.describe_checkout()})")
    print(f"load average: {bl.load_average()}")
    workdir = Path(tempfile.mkdtemp(prefix="marejesho-confirmations-"))
    runs: list[Run] = []
    redis = None
    backend = "postgresql" if args.database_url else "sqlite"
    try:
        url = (
            bl.normalise_url(args.database_url)
            if args.database_url
            else f"sqlite:///{workdir / 'marejesho.db'}"
        )
        journal_dir = workdir / "journal"
        env = bl.app_env(url) | {"MAREJESHO_JOURNAL_DIR": str(journal_dir)}
        print(f"set-up on {backend} ({bl.database_name(url) if args.database_url else url})")
        bl.fresh_schema(url)
        out = bl.flask(env, "payments", "add-shortcode", SHORTCODE, "--name", "Bench")
        confirmation_url = json.loads(out)["confirmation_url"]
        path = "/" + confirmation_url.split("/", 3)[3]
        book = workdir / "book.csv"
        bl.write_small_book(book, args.loans, args.seed)
        started = time.perf_counter()
        print("  " + bl.flask(env, "lenders", "import-loans", str(book)).strip())
        print(f"  (import took {time.perf_counter() - started:.1f} s)")
        payers = load_payers(url)
        print(f"  {len(payers):,} active loans to pay into")
        bodies = Bodies(payers, args.seed)
        redis = None if args.no_redis else start_redis(workdir)
        if args.profile:
            profile_inprocess(url, path, bodies, args.profile)
            if redis:
                profile_inprocess(url, path, bodies, args.profile, redis[1])
        port = free_port(args.port)
        letters = iter("ABCDEFGHJKLMNPQRTUVWXYZ")
        targets = ("floor",) + tuple(t for t in args.targets if t == "app" or redis)
        if not args.no_redis and redis is None:
            print("no redis-server: the app+redis target is skipped")
        for mode, round_, target in (
            (m, r, t) for m in args.modes for r in range(1, args.rounds + 1) for t in targets
        ):
            log = workdir / f"gunicorn-{mode}-{target}-{round_}.log"
            label = (
                f"{target} / {mode} ({args.workers} workers"
                + (f" x {args.threads} threads" if mode == "gthread" else "")
                + ")"
                + (f", round {round_} of {args.rounds}" if args.rounds > 1 else "")
            )
            print(
                f"\n[{label}] gunicorn on 127.0.0.1:{port}, {args.clients} clients, "
                f"{args.warmup:.0f} s warm-up + {args.duration:.0f} s"
            )
            target_env = env if target != "app+redis" else env | {"REDIS_URL": redis[1]}
            process = start_gunicorn(target, port, mode, args, target_env, log)
            letter = next(letters)
            bodies.start_run(letter)
            try:
                load = asyncio.run(
                    drive(
                        port,
                        path,
                        bodies,
                        args.clients,
                        args.warmup,
                        args.duration,
                        process.pid,
                        args.validation_rate if target != "floor" else 0.0,
                    )
                )
                shipping = wait_for_journal(journal_dir) if target != "floor" else None
                drain = (
                    wait_for_processing(url, "S" + letter, args.drain_timeout)
                    if target == "app"
                    else None
                )
            finally:
                stop(process)
            run = Run(mode, target, load, drain=drain, round=round_)
            s = summary(load.latencies)
            print(
                f"  {load.rate:,.0f} req/s, p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, "
                f"answers {dict(load.statuses)}, connection errors {dict(load.errors)}, "
                f"{load.connections:,} connections"
            )
            if load.validations or load.validation_errors:
                v = summary(load.validations)
                print(
                    f"  validation beside it: {len(load.validations) / load.seconds:,.0f} req/s, "
                    f"p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms, "
                    f"errors {load.validation_errors}"
                )
                run.validation = v
            if shipping is not None:
                print(
                    f"  journal: {shipping[0]:,} confirmations not yet in the database when the "
                    f"load stopped; none {shipping[1]:.2f} s later"
                    if shipping[2] == 0
                    else f"  journal: {shipping[2]:,} still waiting after {shipping[1]:.0f} s"
                )
            if target != "floor":
                run.check = check_database(url, "S" + letter, load)
                c = run.check
                if target == "app+redis":
                    c["queued"] = queued_jobs(redis[1])
                if drain:
                    print(
                        f"  processing: {drain['backlog']:,} payments still in received "
                        f"when the load stopped; all processed {drain['seconds']:.1f} s "
                        f"later ({drain['rate']:,.0f} payments/s)"
                        if drain["left"] == 0
                        else f"  processing: {drain['left']:,} still in received after "
                        f"{drain['seconds']:.0f} s (--drain-timeout)"
                    )
                print(
                    f"  database: {c['rows']:,} c2b_payment rows for {c['acknowledged']:,} "
                    f"acknowledged; statuses {dict(c['statuses'])}"
                    + (f"; {c['queued']} jobs waiting in RQ" if "queued" in c else "")
                )
            errors = [
                line
                for line in tail(log, 400).splitlines()
                if "Traceback" in line or "Error" in line or "locked" in line
            ]
            if errors:
                print(f"  gunicorn log ({log.name}): {len(errors)} error line(s), e.g.:")
                for line in errors[:5]:
                    print(f"    {line[:200]}")
            runs.append(run)
            port = free_port(0)
    finally:
        if redis is not None:
            stop(redis[0])
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nload average: {bl.load_average()}")
    print(
        f"\nconfirmations through gunicorn, {backend}, {args.clients} clients, "
        f"{args.duration:.0f} s measured"
    )
    header = (
        "mode",
        "round",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "server CPU ms/req",
        "client CPU",
        "app/floor",
    )
    rows = []
    floor_rate = {}  # (mode, round) -> the floor's rate in that round
    ratios: dict[tuple[str, str], list[float]] = {}  # (mode, target) -> one per round
    for run in runs:
        s = summary(run.load.latencies)
        if run.target == "floor":
            floor_rate[run.mode, run.round] = run.load.rate
        ratio = ""
        if run.target != "floor" and floor_rate.get((run.mode, run.round)):
            value = run.load.rate / floor_rate[run.mode, run.round]
            ratios.setdefault((run.mode, run.target), []).append(value)
            ratio = f"{value:.3f}"
        cpu = (
            f"{1000 * run.load.server_cpu / run.load.measured:.2f}"
            if run.load.server_cpu is not None and run.load.measured
            else "-"
        )
        rows.append(
            (
                run.mode,
                run.round,
                run.target,
                f"{run.load.rate:,.0f}",
                f"{s['p50']:.1f}",
                f"{s['p99']:.1f}",
                f"{s['max']:.0f}",
                run.load.measured_errors,
                cpu,
                f"{100 * run.load.client_cpu / run.load.seconds:.0f} % of a core",
                ratio,
            )
        )
    bl.print_table(header, rows)
    print("goals: " + ", ".join(f"{t} >= {g} x floor" for t, g in GOALS.items()))

    print("\nstored exactly once? (every run's answers, warm-up and drain included)")
    header = (
        "mode",
        "round",
        "target",
        "200 answers",
        "non-200",
        "no answer",
        "rows",
        "distinct",
        "acked missing",
        "stored unacked",
        "callback_log",
        "verdict",
        "posted",
        "unmatched",
        "received",
        "failed",
        "rules",
    )
    rows = []
    for run in runs:
        if run.check is None:
            continue
        c, load = run.check, run.load
        non200 = sum(v for k, v in load.statuses.items() if k != 200)
        ok = (
            c["rows"] == c["distinct"] == c["acknowledged"] + c["stored_unacknowledged"]
            and c["acknowledged_missing"] == 0
            and c["stored_unacknowledged"] <= c["unanswered"]
            and c["logs"] == c["rows"]
        )
        rows.append(
            (
                run.mode,
                run.round,
                run.target,
                f"{load.statuses.get(200, 0):,}",
                non200,
                c["unanswered"],
                f"{c['rows']:,}",
                f"{c['distinct']:,}",
                c["acknowledged_missing"],
                c["stored_unacknowledged"],
                f"{c['logs']:,}",
                "OK" if ok else "MISMATCH",
                c["statuses"].get("posted", 0),
                c["statuses"].get("unmatched", 0),
                c["statuses"].get("received", 0),
                c["statuses"].get("failed", 0),
                ", ".join(f"{k} {v}" for k, v in c["rules"].most_common()),
            )
        )
        for error, count in c["failed_errors"]:
            print(f"  {run.mode}: {count} failed with: {(error or '')[:160]}")
    bl.print_table(header, rows)
    print(f"bodies sent by kind: {dict(bodies.kinds)}")
    print(
        "app = the embedded default (no REDIS_URL): the request journals and acknowledges, "
        "each process's shipper stores; "
        "matching, posting, the SMS receipt and notices run on each worker's job thread when "
        "the worker is idle (the processing line above says how long the burst's backlog "
        "took); app+redis = REDIS_URL set, the request journals, the shipper stores and wakes "
        "the workers"
    )
    for (mode, target), values in ratios.items():
        ratio = statistics.median(values)
        mine = [r for r in runs if (r.mode, r.target) == (mode, target)]
        floors = [floor_rate[mode, r.round] for r in mine]
        rounds = (
            f", median of {len(values)} rounds ({', '.join(f'{v:.3f}' for v in values)})"
            if len(values) > 1
            else ""
        )
        goal = GOALS[target]
        errors = sum(r.load.measured_errors for r in mine)
        verdict = "PASS" if ratio >= goal and not errors else "FAIL"
        print(
            f"SUMMARY confirmations {backend} {mode} {target}: "
            f"{statistics.median(r.load.rate for r in mine):,.0f} req/s, "
            f"floor {statistics.median(floors):,.0f} req/s, ratio {ratio:.3f}{rounds}, "
            f"{errors} errors ({verdict} goal >= {goal}, 0 errors)"
        )
        checked = [r.validation for r in mine if r.validation]
        if checked:
            p99 = max(v["p99"] for v in checked)
            print(
                f"SUMMARY validation {backend} {mode} {target} at "
                f"{args.validation_rate:.0f} req/s beside the load: p99 {p99:.1f} ms "
                f"({'PASS' if p99 < GOAL_VALIDATION_P99_MS else 'FAIL'} goal < "
                f"{GOAL_VALIDATION_P99_MS:.0f} ms)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
