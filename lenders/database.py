"""Database set-up: SQLite pragmas for the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from lenders.extensions import db

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Read the database through a memory map: the pages another process (gunicorn's other
    # worker) has just written are found without a read() each.
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.close()


def init_app(app: Flask) -> None:
    """WAL and foreign keys on every SQLite connection; the instance folder exists."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        path = uri.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)


def bind_converter(type_, dialect):
    """A column type's own converter of a value for the driver (UTC times, money, JSON), as
    SQLAlchemy applies it; None where the driver takes the value as it is."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


def result_converter(type_, dialect, driver_type):
    """A column type's own converter of what the driver hands back (``driver_type``: the
    cursor description's type code), as SQLAlchemy applies it; None if nothing to do."""
    return type_.dialect_impl(dialect).result_processor(dialect, driver_type)


class Prepared:
    """A statement SQLAlchemy compiles once per dialect and the driver runs: its SQL text and
    the bind converters of its columns' own types (UTC times, money, JSON), without the
    per-call building, cache lookup and result machinery. For the few statements on a hot
    path (a confirmation's request); everything else goes through the session as usual.

    ``run(connection, values)`` executes on a SQLAlchemy connection (``session.connection()``),
    in its transaction, ``execute(dialect, driver_connection, values)`` on a DB-API one;
    both return the DB-API cursor (its rows are the driver's own: no result conversion)."""

    def __init__(self, statement, keys: tuple[str, ...] = ()):
        self.statement = statement
        self.keys = keys  # an INSERT's columns, given at run time
        self._by_dialect: dict = {}

    def _compiled(self, dialect):
        found = self._by_dialect.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(self.keys))
            # (name, converter) in the driver's parameter order; the list of values is
            # positional (SQLite's qmark) unless the dialect names its parameters (psycopg).
            binds = tuple(
                (name, bind_converter(compiled.binds[name].type, dialect))
                for name in (compiled.positiontup or compiled.binds)
            )
            found = self._by_dialect[dialect.name] = (
                str(compiled),
                binds,
                compiled.positiontup is not None,
            )
        return found

    def run(self, connection, values: dict):
        """Execute on a SQLAlchemy connection, in its transaction."""
        return self.execute(connection.dialect, connection.connection.driver_connection, values)

    def execute(self, dialect, driver_connection, values: dict):
        """Execute on a DB-API connection (``engine.raw_connection().driver_connection``)."""
        sql, binds, positional = self._compiled(dialect)
        params = []
        for name, convert in binds:
            value = values[name]
            params.append(convert(value) if convert is not None and value is not None else value)
        if not positional:
            params = {name: value for (name, _), value in zip(binds, params, strict=True)}
        cursor = driver_connection.cursor()
        cursor.execute(sql, params)
        return cursor


_quick: dict = {}


def quick_engine(engine):
    """For PostgreSQL, a companion of ``engine`` for the one-statement writes on the hot
    path (a confirmation): autocommit, so no COMMIT round trip, and no ping on checkout
    (the caller replaces a dead connection and tries once more). Other databases: the
    engine itself. One per engine and process."""
    if engine.dialect.name != "postgresql":
        return engine
    quick = _quick.get((os.getpid(), engine))
    if quick is None:
        from sqlalchemy import create_engine

        key = (os.getpid(), engine)
        quick = _quick[key] = create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=False,
            hide_parameters=True,
            connect_args={"connect_timeout": 3},
        )

        @event.listens_for(engine, "engine_disposed")
        def _dispose_too(_engine) -> None:
            companion = _quick.pop(key, None)
            if companion is not None:
                companion.dispose()

    return quick


def claim_rows(
    session: Session,
    model,
    *conditions,
    order_by,
    limit: int,
    values: dict,
    key_share: bool = False,
) -> list[int]:
    """Take up to ``limit`` rows of ``model`` that meet ``conditions``, first by
    ``order_by``, for this worker, by writing ``values`` to them (a lease, a status); their
    ids, sorted. The caller commits. PostgreSQL passes by rows another claim holds (FOR
    UPDATE SKIP LOCKED; FOR NO KEY UPDATE with ``key_share``, so a row whose key another
    transaction's foreign key check holds is not skipped). The rows are picked in a
    MATERIALIZED CTE: picked in an ``IN (subquery)``, the planner may run the pick more than
    once, and with SKIP LOCKED each run finds other rows, so a claim could take more than
    its limit. SQLite runs one writer at a time: the statement alone is the claim (and a
    subquery, as pysqlite opens no transaction before a statement that begins WITH)."""
    picked = (
        select(model.id)
        .where(*conditions)
        .order_by(order_by)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=key_share)
    )
    if session.get_bind().dialect.name == "postgresql":
        cte = picked.cte("picked").prefix_with("MATERIALIZED")
        picked = select(cte.c.id)
    else:  # a statement that begins WITH is not one that pysqlite opens a transaction for
        picked = picked.scalar_subquery()
    claimed = session.execute(
        update(model)
        .where(model.id.in_(picked), *conditions)
        .values(**values)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    ).scalars()
    return sorted(claimed)
