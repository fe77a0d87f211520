"""Prepared single-row INSERT and UPDATE for hot paths, and ``Batch``: writes sent together.

``Model.save()`` compiles its SQL anew on every call; on the saga's path that
compiling cost more than the database round trips (``bench/saga_throughput.py``).
``insert`` and ``update`` build the statement text once per model and field list
and still convert every value the ORM's way (``pre_save`` for ``auto_now``,
``get_db_prep_save`` for JSON, UUID, decimals). What they skip, on purpose:
``pre_save``/``post_save`` signals and model validation.

A ``Batch`` collects writes whose result nobody reads (an audit event, a
counter, a status whose row is already locked) and sends them, with one last
statement whose rows the caller wants, in one round trip: one message of
several statements, which PostgreSQL runs one after the other in the order
sent, each seeing the effects of those before it (unlike the sub-statements of
one ``WITH``, which share a snapshot and run in no promised order). The services
that can add to a batch take ``batch=``; without one they write at once. So
what a call writes, and when, shows at the call.
"""

from functools import cache

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


def _quote(connection, name):
    return connection.ops.quote_name(name)


def table(model, using=DEFAULT_DB_ALIAS) -> str:
    """``model``'s table, quoted: hand-written SQL names tables only through this and ``column``."""
    return _quote(connections[using], model._meta.db_table)


def column(model, name, using=DEFAULT_DB_ALIAS) -> str:
    """The column of ``model``'s field ``name``, quoted."""
    return _quote(connections[using], model._meta.get_field(name).column)


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


def insert_statement(obj, *, ignore_conflicts=False, returning=True, using=DEFAULT_DB_ALIAS):
    """``(sql, params)`` inserting ``obj`` (``RETURNING`` its key unless ``returning`` is False)."""
    sql, fields = _insert_plan(type(obj), using, ignore_conflicts, returning)
    return sql, [f.get_db_prep_save(f.pre_save(obj, True), connections[using]) for f in fields]


def update_statement(obj, fields, *, using=DEFAULT_DB_ALIAS):
    """``(sql, params)`` updating ``fields`` of ``obj`` by primary key (``auto_now`` ones refreshed)."""
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
        cursor.execute(*insert_statement(obj, ignore_conflicts=ignore_conflicts, using=using))
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding, obj._state.db = False, using
    return True


def update(obj, fields, *, using=DEFAULT_DB_ALIAS) -> int:
    """UPDATE ``fields`` of ``obj`` by primary key; returns the row count."""
    with connections[using].cursor() as cursor:
        cursor.execute(*update_statement(obj, fields, using=using))
        return cursor.rowcount


class Batch:
    """Writes whose result nobody reads, sent in the order added, in one round trip.

    Use inside a transaction::

        batch = Batch()
        audit_record(..., batch=batch)          # added, not sent
        rows = batch.send(final_sql, params)    # everything, then final_sql: one round trip

    A write added to a batch cannot be read back before ``send`` (an inserted
    row has no key yet). A batch never sent is simply dropped: use it inside
    ``transaction.atomic()`` and send it before the block ends. Statements take
    ``%s`` placeholders.
    """

    def __init__(self, using=DEFAULT_DB_ALIAS):
        self.using = using
        self.statements: list[tuple[str, list]] = []

    def add(self, sql, params) -> None:
        self.statements.append((sql, list(params)))

    def send(self, sql=None, params=()) -> list[tuple]:
        """Run the statements added, then ``sql`` if given; returns ``sql``'s rows (or [])."""
        statements, self.statements = self.statements, []
        if sql is not None:
            statements.append((sql, list(params)))
        if not statements:
            return []
        connection = connections[self.using]
        if len(statements) == 1:
            with connection.cursor() as cursor:
                cursor.execute(*statements[0])
                return cursor.fetchall() if sql is not None else []
        # Several statements in one message (PostgreSQL's simple query protocol): they run one after
        # the other, in this order, each seeing what the ones before it did, and the server answers
        # once. A failing one stops the rest and aborts the transaction. That needs the parameters
        # bound here (a client-side-binding cursor), wrapped as Django wraps its own cursors.
        connection.ensure_connection()
        raw = psycopg.ClientCursor(connection.connection)
        with connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw) as cursor:
            cursor.execute(";\n".join(text for text, _ in statements), [v for _, values in statements for v in values])
            while raw.nextset():  # the answer of the last statement
                pass
            return cursor.fetchall() if sql is not None else []


def write(sql, params, *, batch=None, using=DEFAULT_DB_ALIAS) -> None:
    """Run a write whose result nobody reads: added to ``batch`` if given, else at once."""
    if batch is not None:
        batch.add(sql, params)
        return
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
