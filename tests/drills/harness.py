"""The production shape under faults, for the drills (tests/drills/test_drills.py, short;
bench/drills.py, at length): gunicorn and ``flask jobs worker --processes 2`` as real
processes on PostgreSQL and Redis, each reached through a TCP proxy that a drill cuts to
make the server unreachable; a stream of confirmations; then the books are checked.

The harness plays systemd's part for the two parent processes (``Restart=always``): if one
exits it is started again, as the README's units do. Nothing else is restarted: killed
gunicorn workers are replaced by gunicorn, killed job workers by the job worker's parent."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class FaultProxy:
    """A TCP proxy to ``target`` that can be cut: ``down()`` closes every connection through
    it and refuses new ones until ``up()``, as a server that died or a network that broke."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._up = True
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{port}").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(pair)

    def _drop(self, pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def down(self) -> None:
        self._up = False
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)

    def up(self) -> None:
        self._up = True

    def close(self) -> None:
        self._closed = True
        self.down()
        self.listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Supervised:
    """One parent process kept running as systemd's ``Restart=always`` would."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._keep, daemon=True, name=f"keep-{name}")

    def start(self) -> Supervised:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def _keep(self) -> None:
        while not self._stopping:
            if self.process.poll() is not None and not self._stopping:
                time.sleep(1.0)  # RestartSec
                if not self._stopping:
                    self.restarts += 1
                    self._spawn()
            time.sleep(0.2)

    def children(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout.split()
        return [int(pid) for pid in found]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 40) -> None:
        self._stopping = True
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Sent:
    accepted: set[str] = field(default_factory=set)  # TransIDs answered 200 + ResultCode 0
    refused: Counter = field(default_factory=Counter)  # other answers, by status
    amounts: dict[str, Decimal] = field(default_factory=dict)


class Stack:
    """PostgreSQL and Redis behind fault proxies, gunicorn (2 workers) and the job worker
    (2 processes) as subprocesses, on a database the caller has migrated and filled."""

    def __init__(self, database_url: str, redis_url: str, workdir: Path) -> None:
        db = make_url(database_url)
        rd = make_url(redis_url)
        self.pg = FaultProxy(db.host or "127.0.0.1", db.port or 5432)
        self.redis = FaultProxy(rd.host or "127.0.0.1", rd.port or 6379)
        self.database_url = database_url
        self.web_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.workdir = workdir
        self.env = os.environ | {
            "DATABASE_URL": db.set(host="127.0.0.1", port=self.pg.port).render_as_string(False),
            "REDIS_URL": str(rd.set(host="127.0.0.1", port=self.redis.port)),
            "SECRET_KEY": "drill-secret-key",
            "PUBLIC_BASE_URL": self.base,
            "MAREJESHO_JOURNAL_DIR": str(workdir / "journal"),
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("MAREJESHO_ENV", None)
        self.web = Supervised(
            "web",
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:lenders.serving",
                "app:create_app()",
                "--bind",
                f"127.0.0.1:{self.web_port}",
            ],  # fmt: skip
            self.env,
            workdir / "web.log",
        )
        self.worker = Supervised(
            "worker",
            [
                str(BIN / "flask"),
                "--app",
                "app",
                "jobs",
                "worker",
                "--processes",
                "2",
                "--poll",
                "1",
            ],  # fmt: skip
            self.env,
            workdir / "worker.log",
        )

    def start(self) -> Stack:
        self.web.start()
        self.worker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.base + "/login", timeout=2)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start: " + (self.workdir / "web.log").read_text())

    def stop(self) -> None:
        self.worker.stop()
        self.web.stop()
        self.pg.close()
        self.redis.close()


def confirmation(trans_id: str, amount: Decimal, bill_ref: str, msisdn: str) -> dict:
    return {
        "TransactionType": "Pay Bill",
        "TransID": trans_id,
        "TransTime": time.strftime("%Y%m%d%H%M%S"),
        "TransAmount": f"{amount:.2f}",
        "BusinessShortCode": "600984",
        "BillRefNumber": bill_ref,
        "InvoiceNumber": "",
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
        "MSISDN": msisdn,
        "FirstName": "DRILL",
    }


class Load:
    """Confirmations at ``rate`` a second from ``threads`` senders until stopped: most name
    a loan, some a borrower's phone, some nothing anyone knows."""

    def __init__(self, url: str, loans: list[tuple[str, str]], *, rate: float, threads: int = 4,
                 seed: int = 7) -> None:  # fmt: skip
        self.url, self.loans, self.rate, self.threads = url, loans, rate, threads
        self.sent = Sent()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._serial = 0
        self._workers = [
            threading.Thread(target=self._send, daemon=True, name=f"load-{n}")
            for n in range(threads)
        ]

    def _next(self) -> dict:
        with self._lock:
            self._serial += 1
            serial = self._serial
            loan, phone = self._rng.choice(self.loans)
            amount = Decimal(self._rng.randrange(5000, 300000)) / 100
            kind = self._rng.random()
        trans_id = f"DR{serial:08d}"
        if kind < 0.7:
            return confirmation(trans_id, amount, loan, "254700000000")
        if kind < 0.9:
            return confirmation(trans_id, amount, "", phone)
        return confirmation(trans_id, amount, "NOBODY KNOWS", "254799999999")

    def _send(self) -> None:
        pause = self.threads / self.rate
        with requests.Session() as http:
            while not self._stop.is_set():
                started = time.monotonic()
                body = self._next()
                try:
                    answer = http.post(self.url, data=json.dumps(body), timeout=15,
                                       headers={"Content-Type": "application/json"})  # fmt: skip
                    ok = answer.status_code == 200 and answer.json().get("ResultCode") == 0
                    status = answer.status_code
                except (requests.RequestException, ValueError) as exc:
                    ok, status = False, type(exc).__name__
                with self._lock:
                    if ok:
                        self.sent.accepted.add(body["TransID"])
                        self.sent.amounts[body["TransID"]] = Decimal(body["TransAmount"])
                    else:
                        self.sent.refused[status] += 1
                self._stop.wait(max(0.0, pause - (time.monotonic() - started)))

    def start(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> Sent:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
        return self.sent


def journalled(workdir: Path) -> int:
    """Confirmations waiting in the web host's journal files (one per server process)."""
    import sqlite3

    total = 0
    for path in (workdir / "journal").glob("confirmations*.db"):
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
            try:
                total += connection.execute("SELECT count(*) FROM confirmation").fetchone()[0]
            except sqlite3.OperationalError:  # created, its table not yet
                continue
    return total


def wait_until_settled(database_url: str, timeout: float, workdir: Path) -> float:
    """Seconds until nothing waits (no payment in received, no message queued, the journal
    empty); raises TimeoutError after ``timeout``. A message left ``sending`` by a worker
    killed during the provider's call waits for a person, not for time: check_books
    reports it."""
    engine = create_engine(database_url)
    started = time.monotonic()
    try:
        while True:
            with engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT (SELECT count(*) FROM c2b_payment WHERE status = 'received')"
                        " + (SELECT count(*) FROM sms_message WHERE status = 'queued')"
                    )
                ).scalar()
            waiting += journalled(workdir)
            if waiting == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{waiting} payment(s), message(s) or journal entries waiting")
            time.sleep(0.5)
    finally:
        engine.dispose()


def check_books(database_url: str, sent: Sent, kills: int = 0) -> dict:
    """The drill's verdict: every acknowledged payment stored once and settled, the books
    balanced to the cent, every receipt sent once. Returns the figures; a problem is listed
    under "problems"."""
    engine = create_engine(database_url)
    problems: list[str] = []
    with engine.connect() as c:
        stored = dict(c.execute(text("SELECT trans_id, amount FROM c2b_payment")).all())
        statuses = Counter(dict(c.execute(
            text("SELECT status, count(*) FROM c2b_payment GROUP BY status")).all()))  # fmt: skip
        lost = sorted(set(sent.accepted) - set(stored))
        if lost:
            problems.append(f"{len(lost)} acknowledged payment(s) lost, e.g. {lost[:5]}")
        wrong = [t for t in sent.accepted if t in stored and stored[t] != sent.amounts[t]]
        if wrong:
            problems.append(f"{len(wrong)} payment(s) stored with another amount")
        if statuses.get("received"):
            problems.append(f"{statuses['received']} payment(s) left in received")
        if statuses.get("failed"):
            problems.append(f"{statuses['failed']} payment(s) failed")
        unbalanced = c.execute(text(
            "SELECT l.number FROM loan l WHERE l.paid <> COALESCE((SELECT sum(a.amount)"
            " FROM allocation a JOIN repayment r ON r.id = a.repayment_id"
            " WHERE r.loan_id = l.id AND r.reversed_at IS NULL), 0)"
            " OR l.paid <> (SELECT sum(i.amount_paid) FROM installment i"
            " WHERE i.loan_id = l.id)")).scalars().all()  # fmt: skip
        if unbalanced:
            problems.append(f"loans whose paid is not their live allocations: {unbalanced[:5]}")
        posted_sum = c.execute(
            text("SELECT COALESCE(sum(amount), 0) FROM c2b_payment WHERE status = 'posted'")
        ).scalar()
        live_sum = c.execute(text(
            "SELECT COALESCE(sum(r.amount + r.to_credit), 0) FROM repayment r"
            " JOIN c2b_payment p ON p.trans_id = r.reference"
            " WHERE r.reversed_at IS NULL AND r.source = 'mpesa'")).scalar()  # fmt: skip
        if posted_sum != live_sum:
            problems.append(f"posted {posted_sum} but allocated + credit {live_sum}")
        doubled = (
            c.execute(
                text(
                    "SELECT reference FROM repayment WHERE reversed_at IS NULL AND source = 'mpesa'"
                    " GROUP BY reference HAVING count(DISTINCT loan_id) <> count(*)"
                )
            )
            .scalars()
            .all()
        )
        if doubled:
            problems.append(f"payments posted twice to one loan: {doubled[:5]}")
        receipts = Counter(dict(c.execute(text(
            "SELECT status, count(*) FROM sms_message WHERE kind = 'receipt'"
            " GROUP BY status")).all()))  # fmt: skip
        sent_twice = c.execute(text(
            "SELECT count(*) FROM sms_message WHERE kind = 'receipt' AND attempts > 1"
            " AND status = 'sent'")).scalar()  # fmt: skip
        posted = statuses.get("posted", 0)
        # A process killed while the provider had its receipt leaves it ``sending``: in
        # doubt, never sent again (a person is told). Each process sends one message at a
        # time, so a kill leaves one at most.
        in_doubt = receipts.get("sending", 0)
        if receipts.get("sent", 0) + receipts.get("skipped", 0) + in_doubt != posted:
            problems.append(f"{posted} posted but receipts {dict(receipts)}")
        if sent_twice:
            problems.append(f"{sent_twice} receipt(s) handed to the provider more than once")
        if in_doubt > kills:
            problems.append(f"{in_doubt} receipt(s) in doubt after {kills} process(es) killed")
    engine.dispose()
    return {
        "acknowledged": len(sent.accepted),
        "refused": dict(sent.refused),
        "stored": len(stored),
        "statuses": dict(statuses),
        "receipts": dict(receipts),
        "receipts_in_doubt": in_doubt,
        "posted_amount": str(posted_sum),
        "problems": problems,
    }


def export_agrees(stack: Stack, workdir: Path) -> list[str]:
    """``flask payments export-transactions`` against the database: same rows, same money."""
    out = workdir / "export.csv"
    env = stack.env | {"DATABASE_URL": stack.database_url}
    subprocess.run([str(BIN / "flask"), "--app", "app", "payments", "export-transactions",
                    str(out)], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
    import csv

    with open(out, encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    engine = create_engine(stack.database_url)
    with engine.connect() as c:
        count, total = c.execute(text("SELECT count(*), sum(amount) FROM c2b_payment")).one()
    engine.dispose()
    exported = sum(Decimal(r["amount"]) for r in rows)
    if (len(rows), exported) != (count, total):
        return [f"export has {len(rows)} rows, {exported}; the database {count}, {total}"]
    return []


@dataclass
class Timeline:
    """How long each fault lasts, in seconds (the short form runs in CI, the long one is
    bench/drills.py)."""

    worker_kills: int = 3
    redis_down: float = 4.0
    postgres_down: float = 6.0
    rate: float = 30.0
    settle: float = 60.0


def run_drill(stack: Stack, loans: list[tuple[str, str]], token: str, plan: Timeline,
              say=print) -> dict:  # fmt: skip
    """Confirmations under every fault in turn, then the books. Returns the figures."""
    url = f"{stack.base}/payments/c2b/{token}/confirmation"
    load = Load(url, loans, rate=plan.rate).start()
    rng = random.Random(11)
    kills = 0
    time.sleep(2)
    for n in range(plan.worker_kills):
        children = stack.worker.children()
        if children:
            victim = rng.choice(children)
            os.kill(victim, signal.SIGKILL)
            kills += 1
            say(f"kill -9 job worker {victim} ({n + 1}/{plan.worker_kills})")
        time.sleep(1.5)
    say(f"Redis down for {plan.redis_down:.0f} s")
    stack.redis.down()
    time.sleep(plan.redis_down)
    stack.redis.up()
    time.sleep(1)
    say(f"PostgreSQL down for {plan.postgres_down:.0f} s")
    stack.pg.down()
    time.sleep(plan.postgres_down)
    stack.pg.up()
    postgres_back = time.monotonic()
    time.sleep(1)
    web_workers = stack.web.children()
    if web_workers:
        os.kill(web_workers[0], signal.SIGKILL)
        kills += 1
        say(f"kill -9 gunicorn worker {web_workers[0]}")
    time.sleep(1)
    say("SIGTERM gunicorn (started again as systemd would)")
    stack.web.signal(signal.SIGTERM)
    time.sleep(3)
    sent = load.stop()
    settled = wait_until_settled(stack.database_url, plan.settle, stack.workdir)
    figures = check_books(stack.database_url, sent, kills)
    figures["problems"] += export_agrees(stack, stack.workdir)
    figures["settled_seconds_after_load"] = round(settled, 1)
    figures["seconds_from_postgres_back_to_settled"] = round(time.monotonic() - postgres_back, 1)
    figures["job_worker_restarts_by_harness"] = stack.worker.restarts
    figures["gunicorn_restarts_by_harness"] = stack.web.restarts
    return figures
