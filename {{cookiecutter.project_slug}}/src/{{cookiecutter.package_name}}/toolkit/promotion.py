"""Development versus production: compare two sets of schemas, and check versions.

`compare` lists, schema by schema, the tables present in one set only and the
tables whose definitions differ, so a promotion can be reviewed before it is made.
`record_versions` stores pipeline.schema_versions in the database when `declare` runs, and
`version_mismatches` tells when the code and the database disagree.

Declared versions live in one small schema per prefix, ``<prefix>_versions``.
"""

from __future__ import annotations

import difflib
import getpass
from dataclasses import dataclass, field

import datajoint as dj

from .project import pipeline, short_name

versions_schema = dj.Schema()


@versions_schema
class DeclaredVersion(dj.Manual):
    """The pipeline.schema_versions entry each schema was last declared with."""

    definition = """
    schema_name : varchar(64)  # module name, e.g. subject
    ---
    version : varchar(32)
    declared_by : varchar(255)
    declared_at = CURRENT_TIMESTAMP : datetime
    """


@dataclass
class SchemaDifference:
    """How one schema differs between two prefixes."""

    schema: str
    missing: list[str] = field(default_factory=list)  # prefixes where the schema is absent
    only_in_source: list[str] = field(default_factory=list)
    only_in_target: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)  # table -> unified diff

    def __bool__(self) -> bool:
        return bool(self.missing or self.only_in_source or self.only_in_target or self.changed)


def definitions(database: str, prefix: str) -> dict[str, str] | None:
    """Each table's definition in a database schema, with the prefix taken out; None if absent."""
    if database not in dj.list_schemas():
        return None
    schema = dj.Schema(database, create_schema=False, create_tables=False, add_objects={})
    result = {}
    for name in schema.list_tables():
        described = schema.get_table(name).describe(context={})
        result[name] = described.replace(prefix, "<prefix>") if prefix else described
    return result


def compare(source_prefix: str, target_prefix: str) -> list[SchemaDifference]:
    """Differences between the schemas under two prefixes, upstream first."""
    report = []
    for module in pipeline.modules:
        name = short_name(module)
        source = definitions(source_prefix + name, source_prefix)
        target = definitions(target_prefix + name, target_prefix)
        difference = SchemaDifference(name)
        if source is None or target is None:
            difference.missing = [
                prefix
                for prefix, tables in ((source_prefix, source), (target_prefix, target))
                if tables is None
            ]
        else:
            difference.only_in_source = sorted(set(source) - set(target))
            difference.only_in_target = sorted(set(target) - set(source))
            for table in sorted(set(source) & set(target)):
                if source[table] != target[table]:
                    difference.changed[table] = "".join(
                        difflib.unified_diff(
                            target[table].splitlines(keepends=True),
                            source[table].splitlines(keepends=True),
                            fromfile=f"{target_prefix}{name}.{table}",
                            tofile=f"{source_prefix}{name}.{table}",
                        )
                    )
        report.append(difference)
    return report


def activate_versions(prefix: str | None = None, *, create: bool = False) -> None:
    """Bind DeclaredVersion to ``<prefix>_versions``."""
    prefix = pipeline.schema_prefix() if prefix is None else prefix
    versions_schema.activate(f"{prefix}_versions", create_schema=create, create_tables=create)


def record_versions(prefix: str | None = None) -> None:
    """Store the code's pipeline.schema_versions as the versions the database is declared with."""
    activate_versions(prefix, create=True)
    user = dj.config.database.user or getpass.getuser()
    rows = [
        {"schema_name": name, "version": version, "declared_by": user}
        for name, version in pipeline.schema_versions.items()
    ]
    with DeclaredVersion.connection.transaction:
        (DeclaredVersion() & [{"schema_name": row["schema_name"]} for row in rows]).delete_quick()
        DeclaredVersion.insert(rows)


def version_mismatches(prefix: str | None = None) -> dict[str, tuple[str, str | None]]:
    """Schemas whose code version differs from the declared one: name -> (code, database)."""
    prefix = pipeline.schema_prefix() if prefix is None else prefix
    if f"{prefix}_versions" not in dj.list_schemas():
        return {name: (version, None) for name, version in pipeline.schema_versions.items()}
    activate_versions(prefix)
    declared = {row["schema_name"]: row["version"] for row in DeclaredVersion().to_dicts()}
    return {
        name: (version, declared.get(name))
        for name, version in pipeline.schema_versions.items()
        if declared.get(name) != version
    }
