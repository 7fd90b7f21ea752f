"""Snapshot a schema from pg_catalog and diff two snapshots, object by object.

Used to prove that kongtaskd's migrations leave exactly the objects graphile-worker 0.18.0
leaves. A snapshot maps a readable key ("column _private_jobs.id") to a dict of the
properties that matter to a client of the schema. Objects whose name starts with
``_kongtaskd_`` or ``kongtaskd_`` are kongtaskd's own and left out; so is everything that
merely mirrors the environment (owners, OIDs). Text that embeds the schema name (index and
view definitions, function types) has it replaced by ``<schema>`` so snapshots of
differently named schemas compare.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg2
import psycopg2.extras

Snapshot = dict[str, dict[str, Any]]

KONGTASKD_PREFIXES = ("_kongtaskd_", "kongtaskd_", "__kongtaskd_")
#: kongtaskd's own migrations a fresh install applies (schema/kongtaskd/).
KONGTASKD_MIGRATIONS = [1, 2, 3, 4, 5, 6, 7, 8, 9]

_RELATIONS = """
select c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relpersistence,
       c.relreplident, c.reloptions, c.relacl::text as acl, c.relispartition,
       obj_description(c.oid, 'pg_class') as comment
from pg_class c
where c.relnamespace = %(schema)s::regnamespace
"""

_COLUMNS = """
select c.relname, a.attname, a.attnum,
       format_type(a.atttypid, a.atttypmod) as type, a.atttypmod, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) as default_expr, a.attidentity, a.attgenerated,
       coll.collname, a.attndims, col_description(c.oid, a.attnum) as comment
from pg_attribute a
join pg_class c on c.oid = a.attrelid
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
left join pg_collation coll on coll.oid = a.attcollation
where c.relnamespace = %(schema)s::regnamespace
  and c.relkind in ('r', 'v', 'm', 'c', 'p', 'f')
  and a.attnum > 0 and not a.attisdropped
order by c.relname, a.attnum
"""

_CONSTRAINTS = """
select coalesce(c.relname, t.typname) as owner, k.conname, k.contype,
       pg_get_constraintdef(k.oid) as definition, k.condeferrable, k.condeferred,
       k.convalidated, k.connoinherit, i.relname as index_name
from pg_constraint k
left join pg_class c on c.oid = k.conrelid
left join pg_type t on t.oid = k.contypid
left join pg_class i on i.oid = k.conindid
where k.connamespace = %(schema)s::regnamespace
"""

_INDEXES = """
select i.relname, t.relname as table_name, pg_get_indexdef(i.oid) as definition,
       x.indisprimary, x.indisunique, x.indisclustered, x.indisvalid, x.indisreplident,
       x.indimmediate
from pg_index x
join pg_class i on i.oid = x.indexrelid
join pg_class t on t.oid = x.indrelid
where i.relnamespace = %(schema)s::regnamespace
"""

_SEQUENCES = """
select c.relname, format_type(s.seqtypid, null) as type, s.seqstart, s.seqincrement,
       s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
       owner.relname as owned_by_table, a.attname as owned_by_column, d.deptype
from pg_sequence s
join pg_class c on c.oid = s.seqrelid
left join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = c.oid
     and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
left join pg_class owner on owner.oid = d.refobjid
left join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
where c.relnamespace = %(schema)s::regnamespace
"""

_VIEWS = """
select c.relname, pg_get_viewdef(c.oid, true) as definition, c.relkind,
       (select array_agg(r.rulename order by r.rulename) from pg_rewrite r
        where r.ev_class = c.oid) as rules
from pg_class c
where c.relnamespace = %(schema)s::regnamespace and c.relkind in ('v', 'm')
"""

_TYPES = """
select t.typname, t.typtype, t.typcategory, c.relkind as relation_kind,
       t.typnotnull, format_type(t.typbasetype, t.typtypmod) as base_type,
       (select array_agg(e.enumlabel order by e.enumsortorder) from pg_enum e
        where e.enumtypid = t.oid) as enum_labels,
       obj_description(t.oid, 'pg_type') as comment
from pg_type t
left join pg_class c on c.oid = t.typrelid
where t.typnamespace = %(schema)s::regnamespace
  -- implicit array types follow their element type
  and not (t.typcategory = 'A' and exists (
    select 1 from pg_type e where e.oid = t.typelem and e.typarray = t.oid))
"""

_FUNCTIONS = """
select p.proname, pg_get_function_identity_arguments(p.oid) as identity_arguments,
       pg_get_function_arguments(p.oid) as arguments,
       pg_get_function_result(p.oid) as result, p.proretset, p.provolatile, p.proisstrict,
       l.lanname, p.prosecdef, p.proparallel, p.proleakproof, p.procost, p.prorows,
       p.prokind, p.proconfig, p.pronargdefaults, p.proacl::text as acl,
       obj_description(p.oid, 'pg_proc') as comment
from pg_proc p
join pg_language l on l.oid = p.prolang
where p.pronamespace = %(schema)s::regnamespace
"""

_TRIGGERS = """
select c.relname, g.tgname, pg_get_triggerdef(g.oid) as definition, g.tgenabled
from pg_trigger g
join pg_class c on c.oid = g.tgrelid
where c.relnamespace = %(schema)s::regnamespace and not g.tgisinternal
"""

_POLICIES = """
select c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles::text as roles,
       pg_get_expr(p.polqual, p.polrelid) as qual,
       pg_get_expr(p.polwithcheck, p.polrelid) as with_check
from pg_policy p
join pg_class c on c.oid = p.polrelid
where c.relnamespace = %(schema)s::regnamespace
"""


def is_kongtaskd(*names: str | None) -> bool:
    """True if any of the names (object, owning table) is one of kongtaskd's own."""
    return any(name is not None and name.startswith(KONGTASKD_PREFIXES) for name in names)


def snapshot(dsn: str, schema: str = "graphile_worker") -> Snapshot:
    """Everything a client of ``schema`` can observe about its structure."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("select quote_ident(%(schema)s) as quoted", {"schema": schema})
            quoted = cur.fetchone()["quoted"]

            def rows(query: str) -> Iterable[dict[str, Any]]:
                cur.execute(query, {"schema": quoted})
                for row in cur.fetchall():
                    yield {key: _normalise(value, quoted) for key, value in row.items()}

            return _collect(rows)
    finally:
        conn.close()


def _collect(rows: Any) -> Snapshot:
    snap: Snapshot = {}

    def put(key: str, props: dict[str, Any]) -> None:
        assert key not in snap, f"duplicate catalog key {key}"
        snap[key] = props

    for row in rows(_RELATIONS):
        if not is_kongtaskd(row["relname"]):
            put(f"relation {row.pop('relname')}", row)

    positions: dict[str, int] = {}
    for row in rows(_COLUMNS):
        table = row.pop("relname")
        if is_kongtaskd(table):
            continue
        # Position among the live columns, so "order" survives dropped columns.
        positions[table] = positions.get(table, 0) + 1
        row.pop("attnum")
        row["position"] = positions[table]
        put(f"column {table}.{row.pop('attname')}", row)

    for row in rows(_CONSTRAINTS):
        owner = row.pop("owner")
        if not is_kongtaskd(owner, row["conname"]):
            put(f"constraint {owner}.{row.pop('conname')}", row)

    for row in rows(_INDEXES):
        if not is_kongtaskd(row["relname"], row["table_name"]):
            put(f"index {row.pop('relname')}", row)

    for row in rows(_SEQUENCES):
        if not is_kongtaskd(row["relname"], row["owned_by_table"]):
            put(f"sequence {row.pop('relname')}", row)

    for row in rows(_VIEWS):
        if not is_kongtaskd(row["relname"]):
            put(f"view {row.pop('relname')}", row)

    for row in rows(_TYPES):
        if not is_kongtaskd(row["typname"]):
            put(f"type {row.pop('typname')}", row)

    for row in rows(_FUNCTIONS):
        if not is_kongtaskd(row["proname"]):
            put(f"function {row.pop('proname')}({row.pop('identity_arguments')})", row)

    for row in rows(_TRIGGERS):
        if not is_kongtaskd(row["relname"], row["tgname"]):
            put(f"trigger {row.pop('relname')}.{row.pop('tgname')}", row)

    for row in rows(_POLICIES):
        if not is_kongtaskd(row["relname"], row["polname"]):
            put(f"policy {row.pop('relname')}.{row.pop('polname')}", row)
    return snap


def _normalise(value: Any, quoted_schema: str) -> Any:
    if isinstance(value, str):
        return value.replace(f"{quoted_schema}.", "<schema>.")
    if isinstance(value, list):
        return [_normalise(item, quoted_schema) for item in value]
    return value


def diff(
    expected: Snapshot, actual: Snapshot, *, labels: tuple[str, str] = ("A", "B")
) -> list[str]:
    """Readable differences, one per line; empty when the snapshots agree."""
    left, right = labels
    lines: list[str] = []
    for key in sorted(expected.keys() | actual.keys()):
        if key not in actual:
            lines.append(f"only in {left}: {key} {expected[key]}")
        elif key not in expected:
            lines.append(f"only in {right}: {key} {actual[key]}")
        else:
            for prop in sorted(expected[key].keys() | actual[key].keys()):
                a, b = expected[key].get(prop), actual[key].get(prop)
                if a != b:
                    lines.append(f"{key}: {prop} differs\n    {left}: {a!r}\n    {right}: {b!r}")
    return lines


def assert_same_catalog(
    expected: Snapshot, actual: Snapshot, *, labels: tuple[str, str] = ("A", "B")
) -> int:
    """Fail with every difference listed; return the number of objects compared."""
    differences = diff(expected, actual, labels=labels)
    compared = len(expected.keys() | actual.keys())
    print(f"catalog comparison: {compared} objects compared, {len(differences)} differences")
    assert not differences, (
        f"{len(differences)} catalog differences ({labels[0]} vs {labels[1]}):\n"
        + "\n".join(differences)
    )
    return compared
