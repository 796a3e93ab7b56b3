"""The confirmation journal: every confirmation is on this host's disk before Safaricom hears
"Accepted", and in the database moments later.

Each server process appends the confirmations it receives to a journal file of its own (a
SQLite file, ``confirmations-<pid>-<random>.db`` in JOURNAL_DIR), synced to disk as the database
would sync its own commit: fully (fsync) in front of PostgreSQL, as far as the embedded
SQLite database syncs its own (WAL, synchronous=NORMAL) in front of that. Then it answers.
A shipper thread in the same process moves what its requests journalled into the database
in batches, through one idempotent store (``intake.store_confirmations``): a burst of a
hundred confirmations is one transaction and two INSERTs, not a hundred of each, and a
database outage is no special case: the rows wait in the journal and go once the database
answers. Where jobs run inline (tests, commands), the request ships its own confirmation
before it answers.

A process that dies leaves its file behind; each process holds a lock on its own file while
it lives (``flock``), and every few seconds every server process on the host ships the files
whose owner is gone. A crash between the database's commit and the journal's delete sends
a batch twice: the second time it is logged as duplicates, never stored twice.

Limits: the journal lives on the web host's disk, so it survives a process crash, a restart
and (in front of PostgreSQL) a power cut, but not the loss of that disk; a host that never
comes back takes with it what it had not shipped (milliseconds' worth, or an outage's): copy
the directory and run ``flask payments replay-journal FILE`` for each file. A file holds at
most JOURNAL_MAX confirmations; past that, or if the disk cannot be written, the request
stores the confirmation in the database itself, and answers 503 if that fails too. The
shared ``confirmations.db`` remembers shortcodes, so that a process started during an
outage still knows its callback tokens."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from lenders.extensions import db
from lenders.jobs import _log_failure, _serving, job_context, runner, serving, wake

log = logging.getLogger("marejesho.journal")
JOURNAL_MAX = 100_000
SHIP_BATCH = 500
# The shipper gathers for this long after it is woken: under a burst a batch holds what
# the process took meanwhile (a batch's fixed cost, about 2 ms of CPU, is spread over it).
SHIP_EVERY = 0.25
FILENAME = "confirmations.db"  # shared: shortcodes, and rows kept by earlier versions
_SCHEMA = (
    # AUTOINCREMENT: an id is never given twice, so forgetting a shipped batch by its ids
    # can never forget a confirmation journalled since under a reused id.
    "CREATE TABLE IF NOT EXISTS confirmation (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " token TEXT NOT NULL,"
    " received_at TEXT NOT NULL, source_ip TEXT, headers TEXT NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shortcode (callback_token TEXT PRIMARY KEY, id INTEGER NOT NULL,"
    " number TEXT NOT NULL, allowed_ips TEXT, validation_policy TEXT)",
)
_local = threading.local()


class JournalFull(RuntimeError):
    """The journal cannot take another confirmation (full, or the disk refused it)."""


def database_unreachable(exc: BaseException, dialect) -> bool:
    """True for the errors an outage gives: the server is down or unreachable, the pool
    timed out, the connection broke, SQLite stayed locked. Not a bug's error."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc
    dbapi = dialect.dbapi
    return isinstance(exc, (dbapi.OperationalError, dbapi.InterfaceError))


def journal_dir(app: Flask | None = None) -> Path:
    return Path((app or current_app).config["JOURNAL_DIR"])


def journal_path(app: Flask | None = None) -> Path:
    """The host's shared journal file (shortcodes; confirmations of earlier versions)."""
    return journal_dir(app) / FILENAME


def journal_files(app: Flask | None = None) -> list[Path]:
    """Every journal file on this host, the shared one first."""
    folder = journal_dir(app)
    return sorted(folder.glob("confirmations*.db"), key=lambda p: (p.name != FILENAME, p.name))


def _synchronous(app: Flask) -> str:
    """As durable as the database the journal stands in front of: PostgreSQL syncs every
    commit to disk; the embedded SQLite database (WAL, synchronous=NORMAL) does not."""
    uri = str(app.config.get("SQLALCHEMY_DATABASE_URI", ""))
    return "NORMAL" if uri.startswith("sqlite") else "FULL"


def _connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """This thread's connection to a file that lives as long as the process uses it: its own
    journal, and the shared file (opened once). Other files: ``_opened``."""
    connections = getattr(_local, "connections", None)
    if connections is None:
        connections = _local.connections = {}
    connection = connections.get(path)
    if connection is None:
        connection = _open(path, synchronous)
        connections[path] = connection
    return connection


@contextlib.contextmanager
def _opened(path: Path, synchronous: str = "NORMAL"):
    """A connection of its own to another process's (or a copied) journal file, closed
    after use; None when the file is not there (it is never created here)."""
    try:
        connection = _open(path, synchronous, create=False)
    except sqlite3.OperationalError:
        if path.exists():
            raise
        yield None
        return
    try:
        yield connection
    finally:
        connection.close()


def _open(path: Path, synchronous: str = "FULL", *, create: bool = True) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path if create else f"file:{path}?mode=rw"
    connection = sqlite3.connect(target, timeout=10, isolation_level=None, uri=not create)
    for attempt in range(50):  # two processes creating the shared file at once: one waits
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.02)
    connection.execute(f"PRAGMA synchronous={synchronous}")
    for statement in _SCHEMA:
        connection.execute(statement)
    path.chmod(0o600)
    return connection


def _try_lock(path: Path):
    """The lock on a journal file (its ``.lock`` beside it), or None when another process
    holds it: the owner of a process's own file holds it while it lives."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class _Own:
    """This process's journal file: its requests append, its shipper thread ships."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pid = os.getpid()
        # A name no other process ever had (pids are reused, by containers above all), so
        # that no one can take this file for a dead process's while this process lives.
        self.path = journal_dir(app) / f"confirmations-{self.pid}-{secrets.token_hex(4)}.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_fd = _try_lock(self.path)  # held for the process's life
        if self.lock_fd is None:
            raise OSError(f"journal file {self.path.name} is locked by another process")
        self.synchronous = _synchronous(app)
        self.waiting: int | None = None  # rows in the file, counted once, then kept up to date
        self.write_lock = threading.Lock()  # one writer at a time: no SQLite busy waits
        self.ship_lock = threading.Lock()  # one shipper at a time: nothing sent twice
        self.woken = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def wake(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            with self.write_lock:
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(
                        target=self._run, name="marejesho-journal", daemon=True
                    )
                    self.thread.start()
                    atexit.register(self.stop, 5.0)  # a worker that exits ships what waits
        self.woken.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ship what waits, end the thread and let go of the file (tests; a server exits)."""
        self.stopping.set()
        self.woken.set()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            self.woken.wait(1.0 if not failures else min(0.25 * 2**failures, 3.0))
            if not self.stopping.is_set():
                self.stopping.wait(SHIP_EVERY)
            self.woken.clear()
            serving_token = _serving.set(True)  # the work it wakes goes to the workers
            try:
                with self.ship_lock, job_context(self.app):
                    ship(self)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the rows wait in the journal
                failures += 1
                _log_failure("shipping the confirmation journal", exc)
            finally:
                _serving.reset(serving_token)


_owns: dict[tuple[int, str], _Own] = {}
_owns_lock = threading.Lock()


def _own(app: Flask) -> _Own:
    key = (os.getpid(), app.config["JOURNAL_DIR"])
    own = _owns.get(key)
    if own is None:
        with _owns_lock:
            own = _owns.get(key)
            if own is None:
                own = _owns[key] = _Own(app)
    return own


def stop(app: Flask) -> None:
    """Stop this process's shipper for ``app``'s journal (tests build many apps)."""
    own = _owns.pop((os.getpid(), app.config["JOURNAL_DIR"]), None)
    if own is not None:
        own.stop()


def keep(shortcode, body: bytes, *, source_ip: str | None, headers: dict, app=None) -> None:
    """Append one confirmation to this process's journal, synced to disk. Raises JournalFull
    when it cannot (the caller stores it in the database itself, or answers 503)."""
    app = app or current_app._get_current_object()
    try:
        own = _own(app)
        with own.write_lock:
            connection = _connect(own.path, own.synchronous)
            if own.waiting is None:
                own.waiting = connection.execute("SELECT count(*) FROM confirmation").fetchone()[0]
            if own.waiting >= app.config.get("JOURNAL_MAX", JOURNAL_MAX):
                raise JournalFull(f"the journal holds {own.waiting} confirmations already")
            connection.execute(
                "INSERT INTO confirmation (token, received_at, source_ip, headers, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    shortcode.callback_token,
                    datetime.now(UTC).isoformat(),
                    source_ip,
                    json.dumps(headers),
                    body,
                ),
            )
            own.waiting += 1
    except (sqlite3.Error, OSError) as exc:
        raise JournalFull(f"the journal cannot be written: {exc}") from exc


def accept(app: Flask, shortcode, body: bytes, address: str | None, headers: dict) -> bool:
    """Keep a confirmation before Safaricom hears "Accepted": on this host's journal,
    synced to disk, then shipped to the database (this module); if the journal
    cannot take it, in the database at once. False when neither could (answer 503:
    nothing was acknowledged, so nothing is lost)."""
    try:
        keep(shortcode, body, source_ip=address, headers=headers, app=app)
    except JournalFull as exc:
        log.error("the journal refused a confirmation for shortcode %s: %s", shortcode.number, exc)
        try:
            store_directly(app, shortcode, body, source_ip=address, headers=headers)
        except Exception:  # noqa: BLE001 - nothing acknowledged: Safaricom hears 503
            logging.getLogger("marejesho.callbacks").exception("callback failed")
            return False
        return True
    ship_soon(app)
    return True


def ship_soon(app: Flask) -> None:
    """Have this process's journal shipped: by its shipper thread in a server, at once
    where jobs run inline (tests and commands) or the lender wants Safaricom answered only
    once the database has the confirmation (MAREJESHO_ACKNOWLEDGE=database). Never raises:
    what is not shipped now (the database is down) waits in the journal."""
    own = _own(app)
    in_background = serving() and app.config.get("JOBS_IN_BACKGROUND", True)
    if in_background and app.config.get("ACKNOWLEDGE", "journal") == "journal":
        if not own.woken.is_set():
            own.wake()
        return
    token = _serving.set(in_background)  # what the shipping wakes: as from the request
    try:
        with own.ship_lock, job_context(app):
            ship(own)
    except Exception as exc:  # noqa: BLE001 - the rows wait in the journal
        _log_failure("shipping the confirmation journal", exc)
    finally:
        _serving.reset(token)


def store_directly(app: Flask, shortcode, body: bytes, *, source_ip, headers: dict):
    """When the journal cannot take a confirmation: store it in the database, as the
    shipper would, and commit. Raises when the database cannot take it either."""
    from payments.intake import Kept, store_confirmations

    with job_context(app):
        (stored,) = store_confirmations(db.session, [Kept(shortcode, body, source_ip, headers)])
        db.session.commit()
    _after_storing([(shortcode, stored)], app)
    return stored


def ship(own: _Own) -> int:
    """Store this process's journalled confirmations in the database (``_ship``); how many.
    Needs an app context and ``own.ship_lock``; raises on a database failure."""
    if not own.path.exists():
        return 0
    # The shipper's own connection forgets without waiting for the disk: a forgetting lost
    # to a power cut sends a batch again, which the database logs as duplicates.
    return _ship(_connect(own.path, "NORMAL"), own.path, own, replayed=False)


def _ship(connection: sqlite3.Connection, path: Path, own: _Own | None, replayed: bool) -> int:
    """A journal file's confirmations to the database, oldest first, a batch per
    transaction, each batch forgotten once committed; how many were stored. Raises on a
    database failure (what was not stored waits in the file)."""
    from payments.callbacks import find_shortcode
    from payments.intake import Kept

    guard = own.write_lock if own is not None else contextlib.nullcontext()
    done, after = 0, 0
    while True:
        rows = connection.execute(
            "SELECT id, token, received_at, source_ip, headers, body FROM confirmation"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, SHIP_BATCH),
        ).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        ids, kept = [], []
        for id_, token, received_at, source_ip, headers, body in rows:
            shortcode = find_shortcode(token)
            if shortcode is None:  # the shortcode was deleted: keep the body for a person
                _orphaned(path, id_)
                continue
            headers = json.loads(headers)
            if replayed:
                headers["Journal"] = "replayed"
            ids.append(id_)
            at = datetime.fromisoformat(received_at)
            kept.append(Kept(shortcode, bytes(body), source_ip, headers, at))
        outcomes = _store(kept)
        shipped = [id_ for id_, stored in zip(ids, outcomes, strict=True) if stored is not None]
        with guard:
            connection.execute(
                "DELETE FROM confirmation WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(shipped),),
            )
            if own is not None and own.waiting is not None:
                own.waiting -= len(shipped)
        _after_storing(
            [(k.shortcode, s) for k, s in zip(kept, outcomes, strict=True) if s is not None]
        )
        done += len(shipped)
        if len(rows) < SHIP_BATCH:
            break
    return done


def _store(kept: list) -> list:
    """Store a batch in one transaction and commit; what became of each (None: not stored,
    it stays in the journal). A database failure raises. Any other error sends the batch
    again one by one: a confirmation that fails while others are stored is quarantined
    with the error (a body that breaks something, for an admin); when every one fails,
    that is a bug or a broken database, not a body: all stay in the journal, loudly."""
    from lenders.jobs import is_transient
    from payments.intake import store_confirmations

    if not kept:
        return []
    try:
        outcomes = store_confirmations(db.session, kept)
        db.session.commit()
        return outcomes
    except Exception as exc:
        db.session.rollback()
        if is_transient(exc) or database_unreachable(exc, db.engine.dialect):
            raise
        failure = exc
    results: list = [failure] if len(kept) == 1 else []
    for item in kept if len(kept) > 1 else ():
        try:
            (stored,) = store_confirmations(db.session, [item])
            db.session.commit()
            results.append(stored)
        except Exception as exc:
            db.session.rollback()
            if is_transient(exc) or database_unreachable(exc, db.engine.dialect):
                raise
            results.append(exc)
    if all(isinstance(r, Exception) for r in results):
        _log_failure("storing journalled confirmations (they stay in the journal)", failure)
        return [None] * len(kept)
    return [
        _quarantine(item, r) if isinstance(r, Exception) else r
        for item, r in zip(kept, results, strict=True)
    ]


def _quarantine(item, exc: Exception):
    from payments.bulk_sql import insert_rows
    from payments.intake import Stored, _log_entry
    from payments.models import CallbackLog

    log.error("confirmation for shortcode %s could not be stored", item.shortcode.number,
              exc_info=exc)  # fmt: skip
    entry = _log_entry(item.shortcode, item.body, item.source_ip, item.headers, item.received_at)
    entry["error"] = f"could not be stored: {type(exc).__name__}: {exc}"[:1000]
    try:
        insert_rows(db.session, CallbackLog.__table__, [entry])
        db.session.commit()
    except Exception:  # noqa: BLE001 - it stays in the journal for a person
        db.session.rollback()
        log.exception("confirmation for shortcode %s kept in the journal", item.shortcode.number)
        return None
    return Stored("quarantined")


def _after_storing(stored: list, app: Flask | None = None) -> None:
    """Count each confirmation's outcome, and wake the payments drain for new payments."""
    from payments.monitoring import count_callback

    outcomes = Counter((shortcode.number, s.outcome) for shortcode, s in stored)
    for (number, outcome), n in outcomes.items():
        count_callback(number, "confirmation", outcome, n)
    if any(s.needs_processing for _, s in stored):
        wake("payments", app=app)


_reported: set[tuple[Path, int]] = set()


def _orphaned(path: Path, id_: int) -> None:
    if (path, id_) not in _reported:
        _reported.add((path, id_))
        log.error("journalled confirmation %s in %s names no shortcode; kept", id_, path.name)


def remember_shortcode(shortcode, app: Flask | None = None) -> None:
    """Keep what a callback needs of a shortcode, so that its token is known during an
    outage even to a process started after the database went away. Best effort."""
    try:
        _connect(journal_path(app)).execute(
            "INSERT OR REPLACE INTO shortcode VALUES (?, ?, ?, ?, ?)",
            (
                shortcode.callback_token,
                shortcode.id,
                shortcode.number,
                shortcode.allowed_ips,
                shortcode.validation_policy,
            ),
        )
    except (sqlite3.Error, OSError) as exc:
        log.warning("could not remember shortcode %s in the journal: %s", shortcode.number, exc)


def remembered_shortcode(token: str, app: Flask | None = None):
    """The shortcode of this callback token as last seen, or None."""
    from payments.callbacks import CallbackShortcode

    path = journal_path(app)
    if not path.exists():
        return None
    try:
        row = (
            _connect(path)
            .execute(
                "SELECT id, number, callback_token, allowed_ips, validation_policy"
                " FROM shortcode WHERE callback_token = ?",
                (token,),
            )
            .fetchone()
        )
    except sqlite3.Error:
        return None
    return CallbackShortcode(*row) if row else None


def waiting(app: Flask | None = None) -> int:
    """How many confirmations wait in this host's journal files."""
    total = 0
    for path in journal_files(app):
        try:
            with _opened(path) as connection:
                if connection is not None:
                    total += connection.execute("SELECT count(*) FROM confirmation").fetchone()[0]
        except sqlite3.Error:
            continue
    return total


def shipped(app: Flask, timeout: float = 30.0) -> bool:
    """Wait until this process's journal is empty (tests and benchmarks); False on timeout."""
    own = _own(app)
    deadline = time.monotonic() + timeout
    while own.path.exists() and _has_rows(_connect(own.path, own.synchronous)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def replay(path: Path | None = None) -> int:
    """Ship ``path`` (a journal file copied from another host: ``flask payments
    replay-journal FILE``), or every journal file on this host that no living process
    owns (a process that died, the shared file); how many were stored. Needs an app
    context; stops at a database failure (try again later)."""
    if path is not None:
        return _adopt(Path(path), keep_files=True)
    mine = _owns.get((os.getpid(), current_app.config["JOURNAL_DIR"]))
    done = 0
    for found in journal_files():
        if mine is not None and found == mine.path:
            if mine.ship_lock.acquire(blocking=False):  # its shipper may be at work
                try:
                    done += ship(mine)
                finally:
                    mine.ship_lock.release()
            continue
        done += _adopt(found, keep_files=found.name == FILENAME)
    if done:
        log.warning("replayed %s journalled confirmation(s) into the database", done)
    return done


def _adopt(path: Path, *, keep_files: bool) -> int:
    """Ship a file no living process owns, under its lock; then, unless ``keep_files``,
    remove it once empty. A file whose owner lives (it holds the lock) is left to it.
    Names are never reused (a pid and a random part), so removing a file and its lock
    cannot take anything from a process that started since."""
    lock = _try_lock(path)
    if lock is None:
        return 0
    try:
        with _opened(path) as connection:
            if connection is None:
                done, empty = 0, True
            else:
                done = _ship(connection, path, None, replayed=True)
                empty = not _has_rows(connection)
        if empty and not keep_files:
            for suffix in ("", "-wal", "-shm", ".lock"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
    finally:
        os.close(lock)
    return done


def _has_rows(connection: sqlite3.Connection) -> bool:
    return connection.execute("SELECT 1 FROM confirmation LIMIT 1").fetchone() is not None


@runner.every(3, local=True)
def replay_journal() -> None:
    """Every few seconds, in every server process: the journals of processes that are gone
    go to the database, and this process's own if its shipper missed it."""
    replay()
