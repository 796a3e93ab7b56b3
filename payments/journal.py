"""The confirmation journal: where a confirmation waits when the database cannot take it.

Safaricom does not resend a confirmation it saw refused, so a database outage must not turn
into lost payments. When storing a confirmation fails because the database is unreachable
(or locked past its timeout), the request writes the raw body to a journal on this host's
disk, a SQLite file synced to disk before Safaricom hears "Accepted", and every server
process on the host replays it into the database once the database answers (a local
periodic job, every few seconds), through the same idempotent store: a confirmation that
did reach the database before the failure is recognised there as a duplicate.

Limits: the journal lives on the web host's disk, so it survives a process crash or a
restart but not the loss of that disk; a host that never comes back takes its journal with
it (copy the file and run ``flask payments replay-journal FILE``). It holds at most
JOURNAL_MAX confirmations; past that, and if the disk cannot be written, the callback
answers 503 as before. Shortcodes are remembered in the journal too, so that a process
started during the outage still knows its callback tokens."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from lenders.extensions import db
from lenders.jobs import runner, wake

log = logging.getLogger("marejesho.journal")
JOURNAL_MAX = 100_000
FILENAME = "confirmations.db"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS confirmation (id INTEGER PRIMARY KEY, token TEXT NOT NULL,"
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


def journal_path(app: Flask | None = None) -> Path:
    app = app or current_app
    return Path(app.config["JOURNAL_DIR"]) / FILENAME


def _connect(path: Path) -> sqlite3.Connection:
    """This thread's connection to the journal (opened once), synced to disk on commit."""
    connections = getattr(_local, "connections", None)
    if connections is None:
        connections = _local.connections = {}
    connection = connections.get(path)
    if connection is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=10, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # on disk before Safaricom hears us
        for statement in _SCHEMA:
            connection.execute(statement)
        path.chmod(0o600)
        connections[path] = connection
    return connection


def keep(shortcode, body: bytes, *, source_ip: str | None, headers: dict) -> None:
    """Write one confirmation to the journal, synced to disk. Raises JournalFull when it
    cannot (the caller answers 503: nothing was acknowledged)."""
    path = journal_path()
    try:
        connection = _connect(path)
        connection.execute("BEGIN IMMEDIATE")
        try:
            (waiting,) = connection.execute("SELECT count(*) FROM confirmation").fetchone()
            if waiting >= current_app.config.get("JOURNAL_MAX", JOURNAL_MAX):
                raise JournalFull(f"the journal holds {waiting} confirmations already")
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
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    except (sqlite3.Error, OSError) as exc:
        raise JournalFull(f"the journal cannot be written: {exc}") from exc
    log.warning("database unreachable: confirmation for shortcode %s journalled", shortcode.number)


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
    """How many confirmations wait in this host's journal."""
    path = journal_path(app)
    if not path.exists():
        return 0
    return _connect(path).execute("SELECT count(*) FROM confirmation").fetchone()[0]


def replay(path: Path | None = None, batch: int = 200) -> int:
    """Store the journalled confirmations in the database, oldest first, and forget each
    once stored; how many were replayed. Several processes may call it: the journal's
    write lock lets one replay at a time. Stops at the first database failure (the
    database is still down: try again later)."""
    from payments.callbacks import CallbackShortcode, find_shortcode
    from payments.intake import store_confirmation

    path = path or journal_path()
    if not path.exists():
        return 0
    connection = _connect(path)
    if not connection.execute("SELECT 1 FROM confirmation LIMIT 1").fetchone():
        return 0
    log.info("replaying the journal's confirmations into the database")
    done = 0
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(
                "SELECT id, token, received_at, source_ip, headers, body FROM confirmation"
                " ORDER BY id LIMIT ?",
                (batch,),
            ).fetchall()
            for id_, token, received_at, source_ip, headers, body in rows:
                shortcode = find_shortcode(token, fresh=True)
                if shortcode is None:  # the shortcode was deleted: keep the body for a person
                    log.error("journalled confirmation %s names no shortcode; kept", id_)
                    continue
                headers = json.loads(headers) | {"Journal": "replayed"}
                store_confirmation(
                    db.engine,
                    CallbackShortcode(*shortcode),
                    bytes(body),
                    source_ip=source_ip,
                    headers=headers,
                    received_at=datetime.fromisoformat(received_at),
                )
                connection.execute("DELETE FROM confirmation WHERE id = ?", (id_,))
                done += 1
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("COMMIT")  # what was stored is forgotten; the rest waits
            raise
        if len(rows) < batch:
            break
    if done:
        log.warning("replayed %s journalled confirmation(s) into the database", done)
        wake("payments")
    return done


@runner.every(3, local=True)
def replay_journal() -> None:
    """Every few seconds, in every server process: confirmations journalled during a
    database outage go to the database once it answers."""
    replay()
