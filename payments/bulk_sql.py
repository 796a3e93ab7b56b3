"""Many rows in one statement, for the paths that write thousands at once (a statement's
lines and gaps).

PostgreSQL: one ``INSERT … SELECT … FROM unnest(array, array, …)`` per call, the columns
sent as arrays: the server plans one statement, where ``executemany`` would make it run one
per row (100,000 lines cost seconds of round trips and executor start-ups). The arrays go
in binary: psycopg's text format quotes every element in Python, which was a third of a
statement import's CPU. SQLite (in-process, no round trips): the driver's ``executemany``,
each value through its column type's converter. Both in the caller's transaction."""

from __future__ import annotations

import json

from sqlalchemy import ARRAY, JSON, Table, any_, bindparam, cast, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from lenders.database import bind_converter


def q(name: str) -> str:
    """A quoted identifier (``before``, ``after`` and ``at`` are audit_event's columns)."""
    return '"' + name.replace('"', '""') + '"'


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def one_of(session: Session, column, values):
    """``column IN (values)``; on PostgreSQL ``column = ANY((SELECT array))``: one
    parameter, and a plan that does not grow with thousands of values. The array goes
    through a sub-select so that the planner does not count its values: shown 2,000 of
    them, it scanned the whole table (c2b_payment, or every line of the shortcode in
    statement_line while an import fills it) where an index finds them several times
    faster."""
    values = list(values)
    if _postgres(session):
        array = ARRAY(column.type)
        hidden = cast(select(bindparam(None, values, type_=array)).scalar_subquery(), array)
        return column == any_(hidden)
    return column.in_(values)


_COLUMNS: dict = {}


def _column(table: Table, name: str, dialect):
    """A column's SQL type name, whether it is JSON, and its converter: worked out once per
    column and dialect (compiling a type is most of a small batch's cost)."""
    key = (table.name, name, dialect.name)
    found = _COLUMNS.get(key)
    if found is None:
        column = table.c[name]
        is_json = isinstance(column.type, JSON)
        convert = None if is_json else bind_converter(column.type, dialect)
        sql_type = "text" if is_json else column.type.compile(dialect=dialect)
        found = _COLUMNS[key] = (sql_type, is_json, convert)
    return found


def _arrays(session: Session, table: Table, columns: list[str], rows: list[dict]):
    """Per column: its SQL type (for the array's cast), whether it is JSON, its values."""
    dialect = session.get_bind().dialect
    found = []
    for name in columns:
        sql_type, is_json, convert = _column(table, name, dialect)
        values = [row[name] for row in rows]
        if is_json:
            values = [None if v is None else json.dumps(v) for v in values]
        elif convert is not None:
            values = [None if v is None else convert(v) for v in values]
        found.append((name, sql_type, is_json, values))
    return found


def insert_rows(
    session: Session,
    table: Table,
    rows: list[dict],
    *,
    conflict: list[str] | None = None,
    returning: tuple[str, ...] = (),
) -> list[tuple] | int:
    """INSERT ``rows`` (each with the same keys) into ``table``; with ``conflict``, a row
    whose key is there already is skipped (ON CONFLICT DO NOTHING). Returns the
    ``returning`` columns of the rows written (in no particular order), or, without
    ``returning``, how many were written."""
    if not rows:
        return [] if returning else 0
    columns = list(rows[0])
    if not _postgres(session):
        return _sqlite_insert(session, table, rows, conflict, returning)
    arrays = _arrays(session, table, columns, rows)
    # A column with one value in every row (the shortcode, the import, a status, a time)
    # is sent once, not as an array: less to dump here and to unnest there.
    varying = [a for a in arrays if a[3].count(a[3][0]) != len(a[3])] or arrays
    unnested = [name for name, _, _, _ in varying]
    picked, scalars = [], []
    for name, sql_type, is_json, values in arrays:
        if name in unnested:
            picked.append(f"u.{q(name)}")
        else:
            picked.append(f"%b::{sql_type}")
            scalars.append(values[0])
        if is_json:
            picked[-1] += "::json"
    unnest = ", ".join(f"%b::{sql_type}[]" for _, sql_type, _, _ in varying)
    names = ", ".join(q(c) for c in columns)
    sql = (
        f"INSERT INTO {q(table.name)} ({names}) SELECT {', '.join(picked)} "
        f"FROM unnest({unnest}) AS u({', '.join(q(name) for name in unnested)})"
    )
    if conflict:
        sql += f" ON CONFLICT ({', '.join(q(c) for c in conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(q(c) for c in returning)}"
    cursor = session.connection().connection.driver_connection.cursor()
    try:
        cursor.execute(sql, [*scalars, *(values for _, _, _, values in varying)])
        return [tuple(row) for row in cursor.fetchall()] if returning else cursor.rowcount
    finally:
        cursor.close()


def _sqlite_insert(session, table, rows, conflict, returning) -> list[tuple] | int:
    statement = sqlite.insert(table)
    if conflict:
        statement = statement.on_conflict_do_nothing(index_elements=conflict)
    if returning:
        statement = statement.returning(*(table.c[name] for name in returning))
        return [tuple(row) for row in session.execute(statement, rows)]
    connection = session.connection()
    dialect = connection.dialect
    keys = list(rows[0])
    compiled = statement.compile(dialect=dialect, column_keys=keys)
    order = compiled.positiontup
    converters = [bind_converter(compiled.binds[name].type, dialect) for name in order]
    params = [
        [
            c(row[k]) if c is not None and row[k] is not None else row[k]
            for k, c in zip(order, converters, strict=True)
        ]
        for row in rows
    ]
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.executemany(str(compiled), params)
        return cursor.rowcount
    finally:
        cursor.close()
