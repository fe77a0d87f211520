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
"""

from functools import cache

from django.db import DEFAULT_DB_ALIAS, connections


def _quote(connection, name):
    return connection.ops.quote_name(name)


@cache
def _insert_plan(model, using, ignore_conflicts):
    connection = connections[using]
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not (f.primary_key and getattr(f, "db_returning", False))]
    columns = ", ".join(_quote(connection, f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    sql = (
        f"INSERT INTO {_quote(connection, meta.db_table)} ({columns}) VALUES ({placeholders}){conflict} "
        f"RETURNING {_quote(connection, meta.pk.column)}"
    )
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


def insert(obj, *, ignore_conflicts=False, using=DEFAULT_DB_ALIAS) -> bool:
    """INSERT ``obj`` as one statement and set its primary key.

    With ``ignore_conflicts`` a row that breaks a unique constraint is not
    inserted and False is returned (``obj`` stays unsaved): the caller reads
    the existing row.
    """
    connection = connections[using]
    sql, fields = _insert_plan(type(obj), using, ignore_conflicts)
    values = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding, obj._state.db = False, using
    return True


def update(obj, fields, *, using=DEFAULT_DB_ALIAS) -> int:
    """UPDATE ``fields`` of ``obj`` (``auto_now`` ones refreshed) by primary key; returns the row count."""
    connection = connections[using]
    sql, model_fields = _update_plan(type(obj), using, tuple(fields))
    values = [f.get_db_prep_save(f.pre_save(obj, False), connection) for f in model_fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, obj.pk])
        return cursor.rowcount
