"""Reading the layer tables' revision tokens (``models.TableRevision``, kept by the triggers of migration
``layers/0005``) as the per-process caches need them.

On PostgreSQL a write changes the token at COMMIT; until then the writing transaction itself has the
table marked dirty (a transaction-local setting set by an immediate trigger), and its token reads as
None here: uncacheable, so that transaction never caches or serves what it has not committed, and
never serves a cached version that its own writes made stale. SQLite changes the token at once.
"""
from __future__ import annotations

from django.db import connections
from django.db.models import BigIntegerField, Subquery
from django.db.models.expressions import RawSQL

from .models import TableRevision


def token_expression(model, using: str | None = None):
    """The table's token as a query expression (read in the same statement as the rows)."""
    table = model._meta.db_table
    using = using or model.objects.db
    if connections[using].vendor == "postgresql":
        return RawSQL(f"CASE WHEN current_setting(%s, true) = '1' THEN NULL ELSE (SELECT token FROM "
                      f"{TableRevision._meta.db_table} WHERE \"table\" = %s) END",
                      ("layers.dirty_" + table, table), output_field=BigIntegerField())
    return Subquery(TableRevision.objects.filter(table=table).values("token")[:1])


def current_tokens(models_, using: str = "default") -> dict:
    """``{db_table: token or None}`` of several tables, in one query."""
    tables = [m._meta.db_table for m in models_]
    conn = connections[using]
    qn = conn.ops.quote_name
    token = "token"
    if conn.vendor == "postgresql":   # written by this transaction and not committed: None (uncacheable)
        token = f"CASE WHEN current_setting('layers.dirty_' || {qn('table')}, true) = '1' THEN NULL ELSE token END"
    with conn.cursor() as cur:
        cur.execute(f"SELECT {qn('table')}, {token} FROM {qn(TableRevision._meta.db_table)} "
                    f"WHERE {qn('table')} IN ({', '.join(['%s'] * len(tables))})", tables)
        found = dict(cur.fetchall())
    return {t: found.get(t) for t in tables}
