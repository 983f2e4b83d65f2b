"""Drift between the table definitions in code and the tables in the database.

``check`` compiles each table's definition with DataJoint's own parser
(``datajoint.declare.prepare_declare``) and compiles the definition DataJoint reads
back from the database (``Table.describe()``) the same way -- exactly what
``Table.alter()`` does before it alters -- then compares the two: attributes (type,
default, nullability, comment), primary key, foreign keys, indexes and the table
comment. Tables missing on either side are reported too. Nothing is written: the
modules are bound with ``pipeline.activate(create=False)``.

What DataJoint treats as the same is not reported: the order of the primary key's
columns, each server's spelling of a default (``1`` and ``1.0``, ``0`` and ``'false'`` for a
``bool``, ``CURRENT_TIMESTAMP``), and the index every server keeps on a foreign key.
PostgreSQL's indexes are read from its catalogue, as DataJoint 2.3.5 reads none back there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import datajoint as dj
from datajoint.declare import prepare_declare

from .operations import all_tables, label
from .project import pipeline, short_name

ADVICE = """\
To bring the database in line with the code, on a development set first:
  - attributes added, removed or changed (secondary only): Table.alter() shows the ALTER
    statement and runs it once you confirm;
  - a changed primary key, foreign key or index, or a table to start over: drop it and its
    dependents (Table.drop()), then `declare` and `populate` again;
  - tables only in the database: drop them if nothing needs them any more
    (`reset` drops a whole development set);
then run `check` again. On production, make the same change only after it was reviewed
on a development set (`compare`)."""


@dataclass
class TableDrift:
    """How one table in the database differs from its definition in code."""

    table: str
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.problems)


# How servers spell the same default differently: MariaDB reads CURRENT_TIMESTAMP back as
# current_timestamp(), and numbers come back as 1 where the code says 1.0.
TIMESTAMP = re.compile(r"current_timestamp(\(\))?", re.IGNORECASE)
NUMBER = re.compile(r"DEFAULT '?(-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)'?(?=\s|$)")
# PostgreSQL reads defaults back as casts, e.g. 'silicon'::schema.enum_x or '1'::real.
CAST = re.compile(r"\"?'(?P<value>(?:[^']|'')*)'::[^']+?\"?")
# A bool attribute (boolean on PostgreSQL, tinyint on MySQL; DataJoint's comment names the
# core type) and its default: PostgreSQL reads `admin = 0 : bool` back as 'false'.
BOOLEAN = re.compile(r" boolean |COMMENT [\"']:bool:")
BOOLEAN_DEFAULT = re.compile(r"DEFAULT (?P<value>'[^']*'|\S+)", re.IGNORECASE)
TRUTH = dict.fromkeys(("0", "0.0", "false", "f"), "false") | dict.fromkeys(
    ("1", "1.0", "true", "t"), "true"
)


def normalized(sql: str) -> str:
    """Attribute SQL with the server's spelling of defaults made uniform."""
    sql = TIMESTAMP.sub("CURRENT_TIMESTAMP", sql)
    sql = NUMBER.sub(lambda match: f"DEFAULT {float(match[1])!r}", sql)
    if BOOLEAN.search(sql):
        sql = BOOLEAN_DEFAULT.sub(
            lambda match: "DEFAULT " + TRUTH.get(match["value"].strip("'").lower(), match["value"]),
            sql,
            count=1,
        )
    return sql


# An index as DataJoint compiles it, e.g. 'unique index ("email")' or 'INDEX (`lab`)'.
INDEX = re.compile(r"(?P<unique>unique\s+)?index\s*\((?P<columns>[^)]*)\)", re.IGNORECASE)
FOREIGN_KEY = re.compile(r"FOREIGN KEY\s*\((?P<columns>[^)]*)\)", re.IGNORECASE)
# PostgreSQL's secondary indexes of one table (DataJoint 2.3.5 reads none of them back).
POSTGRES_INDEXES = """
SELECT ix.indisunique, array_agg(a.attname::text ORDER BY k.position)
FROM pg_index ix
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_namespace s ON s.oid = t.relnamespace
CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
WHERE s.nspname = %s AND t.relname = %s AND NOT ix.indisprimary
GROUP BY ix.indexrelid, ix.indisunique
"""

Index = tuple[bool, tuple[str, ...]]


def columns(text: str) -> tuple[str, ...]:
    """Column names of an SQL column list, without quotes."""
    return tuple(name.strip().strip('`"') for name in text.split(","))


def parsed_indexes(indexes: list[str]) -> set[Index]:
    """(unique, columns) of each index as DataJoint compiles it."""
    matches = (INDEX.fullmatch(sql.strip()) for sql in indexes)
    return {(bool(match["unique"]), columns(match["columns"])) for match in matches if match}


def declared_indexes(indexes: set[Index], foreign_keys: list[str]) -> set[Index]:
    """The indexes a definition declares: every server also indexes each foreign key's
    columns (MySQL by itself, DataJoint explicitly on PostgreSQL), which is no difference."""
    matches = (FOREIGN_KEY.search(sql) for sql in foreign_keys)
    return indexes - {(False, columns(match["columns"])) for match in matches if match}


def postgres_indexes(table: type[dj.Table]) -> set[Index]:
    """The secondary indexes of a declared table, read from PostgreSQL's catalogue."""
    rows = table.connection.query(POSTGRES_INDEXES, args=(table.database, table.table_name))
    return {(bool(unique), tuple(names)) for unique, names in rows.fetchall()}


def index_sql(index: Index) -> str:
    unique, names = index
    return f"{'UNIQUE ' if unique else ''}INDEX ({', '.join(names)})"


def database_definition(table: type[dj.Table]) -> str:
    """The definition DataJoint reads back from the database, with PostgreSQL's casts undone."""
    definition = table().describe(context=table.declaration_context)
    for attribute in table().heading.attributes.values():
        default = attribute.default
        cast = CAST.fullmatch(default) if isinstance(default, str) else None
        if cast:
            value = cast["value"].replace("''", "'")
            plain = value if attribute.numeric else '"' + value.replace('"', '\\"') + '"'
            before, after = f"{attribute.name}={default}", f"{attribute.name}={plain}"
            definition = "".join(
                after + line[len(before) :] if line.startswith(before) else line
                for line in definition.splitlines(keepends=True)
            )
    return definition


def attributes(attribute_sql: list[str], comments: dict[str, str], adapter) -> dict[str, str]:
    """Each attribute's compiled SQL by name, with its comment where kept apart (PostgreSQL)."""
    quote = re.escape(adapter.quote_identifier("x")[0])
    name = re.compile(rf"^{quote}(?P<name>\w+){quote}")
    result = {}
    for sql in attribute_sql:
        attribute = name.match(sql)["name"]  # type: ignore[index]
        comment = comments.get(attribute)
        kept_apart = comment and "COMMENT" not in sql
        result[attribute] = normalized(sql) + (f" COMMENT {comment!r}" if kept_apart else "")
    return result


def compiled(definition: str, table: type[dj.Table]) -> tuple:
    """A definition as DataJoint compiles it, in the table's own declaration context."""
    adapter = table.connection.adapter
    parsed = prepare_declare(definition, table.declaration_context, adapter)
    if hasattr(adapter, "get_pending_enum_ddl"):
        adapter.get_pending_enum_ddl(table.database)  # drain: nothing is declared
    comment, primary_key, attribute_sql, foreign_keys, indexes, _, _, comments = parsed
    return comment, primary_key, attributes(attribute_sql, comments, adapter), foreign_keys, indexes


def table_drift(table: type[dj.Table]) -> TableDrift:
    """Differences between a declared table and its definition in code."""
    drift = TableDrift(label(table))
    try:
        in_database = database_definition(table)
    except dj.DataJointError as error:
        drift.problems.append(f"cannot read its definition from the database: {error}")
        return drift
    try:
        code = compiled(table.definition, table)
    except dj.DataJointError as error:
        drift.problems.append(f"cannot compile its definition in code: {error}")
        return drift
    try:
        database = compiled(in_database, table)
    except dj.DataJointError as error:  # e.g. a foreign key to a table no longer in code
        drift.problems.append(f"its database definition does not compile here: {error}")
        return drift
    comment, primary_key, attrs, foreign_keys, indexes = code
    comment_, primary_key_, attrs_, foreign_keys_, indexes_ = database
    if set(primary_key) != set(primary_key_):  # a set: the order of its columns is no change
        drift.problems.append(
            f"primary key: database ({', '.join(primary_key_)}), code ({', '.join(primary_key)})"
        )
    for name in attrs:
        if name not in attrs_:
            drift.problems.append(f"attribute {name} is in code only: {attrs[name]}")
        elif attrs[name] != attrs_[name]:
            drift.problems.append(
                f"attribute {name} changed:\n      database: {attrs_[name]}"
                f"\n      code:     {attrs[name]}"
            )
    for name in attrs_:
        if name not in attrs:
            drift.problems.append(f"attribute {name} is in the database only: {attrs_[name]}")
    for sql in foreign_keys:
        if sql not in foreign_keys_:
            drift.problems.append(f"foreign key in code only: {sql}")
    for sql in foreign_keys_:
        if sql not in foreign_keys:
            drift.problems.append(f"foreign key in the database only: {sql}")
    postgres = table.connection.adapter.backend == "postgresql"
    read_back = postgres_indexes(table) if postgres else parsed_indexes(indexes_)
    ours = declared_indexes(parsed_indexes(indexes), foreign_keys)
    theirs = declared_indexes(read_back, foreign_keys_)
    drift.problems += [f"index in code only: {index_sql(i)}" for i in sorted(ours - theirs)]
    drift.problems += [f"index in the database only: {index_sql(i)}" for i in sorted(theirs - ours)]
    if comment != comment_:
        drift.problems.append(f"table comment: database {comment_!r}, code {comment!r}")
    return drift


def check(prefix: str | None = None) -> list[TableDrift]:
    """Every difference between the code and the database under the prefix, upstream first."""
    names = pipeline.schema_names(prefix)
    bound = pipeline.activate(prefix, create=False)
    report: list[TableDrift] = []
    for module in pipeline.modules:
        if short_name(module) not in bound:
            report.append(
                TableDrift(short_name(module), [f"schema {names[short_name(module)]} is missing"])
            )
    code_tables: dict[str, set[str]] = {}
    for table in all_tables():
        if table.database is None:
            continue  # its schema is missing, reported above
        code_tables.setdefault(table.database, set()).add(table.table_name)
        if not table().is_declared:
            report.append(TableDrift(label(table), ["missing in the database"]))
        else:
            report.append(table_drift(table))
    for module in pipeline.modules:
        if short_name(module) in bound:
            database = bound[short_name(module)]
            for name in module.schema.list_tables():
                if name not in code_tables.get(database, set()):
                    report.append(
                        TableDrift(f"{database}.{name}", ["in the database only, not in code"])
                    )
    return [drift for drift in report if drift]
