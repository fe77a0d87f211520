"""Single-row INSERT and UPDATE statements built once per model, for hot paths.

``Model.save()`` compiles its SQL anew on every call; on the saga's path that
compiling cost more than the database round trips (``bench/saga_throughput.py``).
These helpers build the statement text once per model and field list and
still convert every value the ORM's way (``pre_save`` for ``auto_now``,
``get_db_prep_save`` for JSON, UUID, decimals), so they work on PostgreSQL and
SQLite alike.

What they skip, on purpose: ``pre_save``/``post_save`` signals and model
validation. Use them only for models whose writes need neither (audit events,
rows a service creates in a known state) and prefer ``save()`` everywhere else.

``deferring`` goes one step further for writes whose result nobody reads (an
audit event, a counter): inside the block they are held back and sent as part
of the block's last statement, one round trip for all of them.
"""

import contextvars
from contextlib import contextmanager
from functools import cache

from django.db import DEFAULT_DB_ALIAS, connections


def _quote(connection, name):
    return connection.ops.quote_name(name)


@cache
def _insert_plan(model, using, ignore_conflicts, returning=True):
    connection = connections[using]
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not (f.primary_key and getattr(f, "db_returning", False))]
    columns = ", ".join(_quote(connection, f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    sql = f"INSERT INTO {_quote(connection, meta.db_table)} ({columns}) VALUES ({placeholders}){conflict}"
    if returning:
        sql += f" RETURNING {_quote(connection, meta.pk.column)}"
    return sql, fields


@cache
def _update_plan(model, using, names):
    connection = connections[using]
    meta = model._meta
    fields = [meta.get_field(name) for name in names]
    assignments = ", ".join(f"{_quote(connection, f.column)} = %s" for f in fields)
    table, pk = _quote(connection, meta.db_table), _quote(connection, meta.pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"
    return sql, fields


def _insert_statement(obj, using, ignore_conflicts=False, returning=True):
    sql, fields = _insert_plan(type(obj), using, ignore_conflicts, returning)
    return sql, [f.get_db_prep_save(f.pre_save(obj, True), connections[using]) for f in fields]


def _update_statement(obj, fields, using):
    sql, model_fields = _update_plan(type(obj), using, tuple(fields))
    values = [f.get_db_prep_save(f.pre_save(obj, False), connections[using]) for f in model_fields]
    return sql, [*values, obj.pk]


def insert(obj, *, ignore_conflicts=False, using=DEFAULT_DB_ALIAS) -> bool:
    """INSERT ``obj`` as one statement and set its primary key.

    With ``ignore_conflicts`` a row that breaks a unique constraint is not
    inserted and False is returned (``obj`` stays unsaved): the caller reads
    the existing row.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(*_insert_statement(obj, using, ignore_conflicts))
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding, obj._state.db = False, using
    return True


def update(obj, fields, *, using=DEFAULT_DB_ALIAS) -> int:
    """UPDATE ``fields`` of ``obj`` (``auto_now`` ones refreshed) by primary key; returns the row count."""
    with connections[using].cursor() as cursor:
        cursor.execute(*_update_statement(obj, fields, using))
        return cursor.rowcount


# --- writes held back until the block's last statement ------------------------------
_held = contextvars.ContextVar("sql_held_writes", default=None)


def combines(connection) -> bool:
    """Can several writes travel as CTEs of one statement? (PostgreSQL; SQLite has no data-modifying CTEs.)"""
    return connection.vendor == "postgresql"


class HeldWrites:
    """The writes held back by ``deferring``; ``execute`` sends them with one last statement."""

    def __init__(self, using):
        self.using = using
        self.statements = []

    def execute(self, cursor, ctes, select, params):
        """Run ``WITH <held writes>, <ctes> SELECT <select>`` as one statement and return its row.

        The held writes become CTEs that the SELECT reads first, one after the
        other, so they run in the order they were made (an unread data-modifying
        CTE would run at the end of the statement, in reverse order), and before
        ``ctes``. ``ctes`` and ``select`` use ``%s`` placeholders for ``params``;
        ``select`` must give one row (scalar subqueries).
        """
        held, self.statements = self.statements, []
        names = [f"held{i}" for i in range(len(held))]
        parts = [f"{name} AS ({sql} RETURNING 1)" for name, (sql, _) in zip(names, held, strict=True)]
        reads = [f"(SELECT count(*) FROM {name})" for name in names]
        query = f"WITH {', '.join([*parts, ctes] if ctes else parts)} SELECT {', '.join([*reads, select])}"
        cursor.execute(query, [value for _, values in held for value in values] + list(params))
        return cursor.fetchone()[len(held) :]

    def flush(self):
        """Run the held writes now: on PostgreSQL as one statement (``combines``), elsewhere one by one."""
        if not self.statements:
            return
        connection = connections[self.using]
        with connection.cursor() as cursor:
            if combines(connection) and len(self.statements) > 1:
                self.execute(cursor, "", "1", [])
                return
            held, self.statements = self.statements, []
            for sql, params in held:
                cursor.execute(sql, params)


@contextmanager
def deferring(using=DEFAULT_DB_ALIAS):
    """Hold back ``write`` and ``insert_later`` calls made in the block (PostgreSQL: CTEs).

    Use inside a transaction, for writes nothing in the same transaction reads
    afterwards. The block's code sends them with ``HeldWrites.execute``; any
    still held when the block ends normally run then (one statement on
    PostgreSQL). When the block raises they are dropped: the transaction around
    it rolls back anyway.
    """
    held = HeldWrites(using)
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)
    held.flush()


def deferring_writes(using=DEFAULT_DB_ALIAS) -> bool:
    held = _held.get()
    return held is not None and held.using == using


def write(sql, params, *, using=DEFAULT_DB_ALIAS) -> None:
    """Execute a write whose result nobody reads: now, or held back inside ``deferring``."""
    if deferring_writes(using):
        _held.get().statements.append((sql, params))
        return
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)


def write_all(statements, *, using=DEFAULT_DB_ALIAS) -> None:
    """``write`` each ``(sql, params)`` in this order; outside ``deferring`` as one statement on PostgreSQL."""
    if deferring_writes(using):
        _held.get().statements.extend(statements)
        return
    held = HeldWrites(using)
    held.statements = list(statements)
    held.flush()


def insert_later(obj, *, using=DEFAULT_DB_ALIAS) -> None:
    """``insert`` for a row whose key nobody needs: inside ``deferring`` it is held back (``obj.pk`` stays None)."""
    if not deferring_writes(using):
        insert(obj, using=using)
        return
    write(*_insert_statement(obj, using, returning=False), using=using)


def update_later(obj, fields, *, using=DEFAULT_DB_ALIAS) -> None:
    """``update`` when nobody needs the row count: inside ``deferring`` it is held back."""
    write(*_update_statement(obj, fields, using), using=using)
