"""Operating the pipeline: which schema set a command acts on, its status, and reset.

- ``announce`` prints the schema set a command acts on (one line on stderr), and says
  so loudly when the command writes to production.
- ``status_report`` describes every table upstream first: row counts of Manual, Lookup
  and Part tables; done / remaining / reserved / errors of Imported and Computed ones,
  and the keys waiting on manual input (see ``waiting_on_manual_input``).
- ``reset_plan`` and ``reset`` drop a development or personal set and refuse production.

Nothing here creates a schema or a table: status binds the modules with
``pipeline.activate(create=False)``.
"""

from __future__ import annotations

import sys
from typing import Any

import datajoint as dj
from datajoint.jobs import Job
from datajoint.user_tables import _get_tier

from .project import pipeline, short_name

TIERS = (dj.Lookup, dj.Manual, dj.Imported, dj.Computed, dj.Part)  # Lookup before Manual


def describe_set(prefix: str | None = None) -> str:
    """The schema set in words, e.g. 'dev_my_pipeline_* (development)'."""
    prefix = pipeline.schema_prefix() if prefix is None else prefix
    return f"{prefix}* ({pipeline.prefix_kind(prefix)})"


def announce(prefix: str | None = None, *, writes: bool = False) -> None:
    """One line on stderr naming the schema set a command acts on."""
    prefix = pipeline.schema_prefix() if prefix is None else prefix
    line = f"schemas: {describe_set(prefix)}"
    if writes and pipeline.prefix_kind(prefix) == "production":
        line += " -- this command WRITES TO PRODUCTION"
    print(line, file=sys.stderr)


def tier(table: type[dj.Table]) -> str:
    """Manual, Lookup, Imported, Computed or Part."""
    return next(kind.__name__ for kind in TIERS if issubclass(table, kind))


def label(table: type[dj.Table]) -> str:
    """A table as code names it: 'schema.Class' or 'schema.Master.Part'."""
    return f"{table.__module__.rpartition('.')[2]}.{table.__qualname__}"


def all_tables() -> list[type[dj.Table]]:
    """Every table class of the pipeline, upstream first; Part tables follow their master.

    Modules are in dependency order (pipeline.modules) and, within a module, tables are in the
    order they are defined, which is the order DataJoint declares them in.
    """
    tables: list[type[dj.Table]] = []
    for module in pipeline.modules:
        for member in vars(module).values():
            if (
                isinstance(member, type)
                and issubclass(member, dj.Table)
                and not issubclass(member, dj.Part)
                and member.__module__ == module.__name__
                and hasattr(member, "definition")
            ):
                tables.append(member)
                tables.extend(
                    part
                    for part in vars(member).values()
                    if isinstance(part, type) and issubclass(part, dj.Part)
                )
    return tables


def existing_jobs(table: type[dj.Table]) -> Job | None:
    """A declared table's jobs table if it exists, else None.

    ``Table.jobs`` declares the jobs table on first use, so read-only code asks here.
    """
    jobs = Job(table())
    return jobs if jobs.is_declared else None


def is_manual_input(full_table_name: str) -> bool:
    """Rows entered by people: a Manual table or a Part of one."""
    kind = _get_tier(full_table_name)
    if kind is dj.Part:
        master = full_table_name.rsplit("__", 1)[0] + full_table_name[-1]
        kind = _get_tier(master)
    return kind is dj.Manual


def waiting_on_manual_input(table: type[dj.Table]) -> int:
    """Upstream keys of an auto-populated table held back by a missing manual row.

    The table's keys are the join of its primary-key parents. A key is waiting on
    manual input when the parents that are *not* entered by hand (Imported, Computed,
    Lookup) have it, but a Manual parent (or a Part of one) has no matching row: the
    key can be populated only once someone enters that row. Counted as distinct rows of
    the join of the non-manual parents with no match in some manual parent; 0 when all
    the parents are manual (nothing identifies a key before it is entered). A custom
    ``key_source`` is not inspected.
    """
    parents = table().parents(primary=True, as_objects=True, foreign_key_info=True)

    def keys(parent: dj.FreeTable, props: dict) -> Any:
        renamed = {attr: ref for attr, ref in props["attr_map"].items() if attr != ref}
        return parent.proj(**renamed) if props["aliased"] else parent.proj()

    manual = [keys(*p) for p in parents if is_manual_input(p[0].full_table_name)]
    other = [keys(*p) for p in parents if not is_manual_input(p[0].full_table_name)]
    if not manual or not other:
        return 0
    joined = other[0]
    for parent in other[1:]:
        joined = joined * parent
    return len(joined & [joined - parent for parent in manual])


def table_status(table: type[dj.Table], errors_shown: int = 3) -> dict[str, Any]:
    """Row counts of one table; for an auto-populated one, its progress and jobs too."""
    row: dict[str, Any] = {"table": label(table), "tier": tier(table)}
    if table.database is None or not table().is_declared:
        return {**row, "declared": False}
    row.update(declared=True, rows=len(table()))
    if not issubclass(table, (dj.Imported, dj.Computed)):
        return row
    remaining, total = table().progress()
    jobs = existing_jobs(table)
    counts = jobs.progress() if jobs else {"reserved": 0, "error": 0}
    latest = (
        jobs.errors.proj("error_message").to_dicts(
            order_by="completed_time DESC", limit=errors_shown
        )
        if jobs and errors_shown
        else []
    )
    row.update(
        done=total - remaining,
        remaining=remaining,
        total=total,
        reserved=counts["reserved"],
        errors=counts["error"],
        waiting_on_manual_input=waiting_on_manual_input(table),
        latest_errors=[
            {
                "key": {k: v for k, v in error.items() if k != "error_message"},
                "message": error["error_message"],
            }
            for error in latest
        ],
    )
    return row


def status_report(errors_shown: int = 3) -> list[dict[str, Any]]:
    """Every table's status, upstream first, under the prefix in force (read-only)."""
    pipeline.activate(create=False)
    return [table_status(table, errors_shown) for table in all_tables()]


def release_orphans(orphan_timeout: float) -> int:
    """Re-queue reservations older than orphan_timeout seconds; returns how many."""
    pipeline.activate(create=False)
    released = 0
    for table in all_tables():
        auto = issubclass(table, (dj.Imported, dj.Computed)) and table.database
        jobs = existing_jobs(table) if auto and table().is_declared else None
        if jobs:
            released += jobs.refresh(orphan_timeout=orphan_timeout)["orphaned"]
    return released


STATUS_COLUMNS = ("rows", "done", "remaining", "reserved", "errors", "waiting")
NOT_DECLARED = "not declared"


def format_status(report: list[dict[str, Any]]) -> str:
    """The status report as a text table, each column as wide as its longest value."""

    def cells(row: dict[str, Any]) -> list[str]:
        if not row["declared"]:
            return [row["table"], row["tier"], NOT_DECLARED]
        counts = ["rows", "done", "remaining", "reserved", "errors", "waiting_on_manual_input"]
        return [row["table"], row["tier"], *(str(row[name]) for name in counts if name in row)]

    table = [["table", "tier", *STATUS_COLUMNS], *(cells(row) for row in report)]
    widths = [
        max(len(line[i]) for line in table if i < len(line) and line[2:] != [NOT_DECLARED])
        for i in range(len(STATUS_COLUMNS) + 2)
    ]
    widths[:2] = [max(len(line[i]) for line in table) for i in (0, 1)]

    def text(line: list[str]) -> str:
        if line[2:] == [NOT_DECLARED]:
            return f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {NOT_DECLARED}"
        aligned = [
            value.ljust(widths[i]) if i < 2 else value.rjust(widths[i])
            for i, value in enumerate(line)
        ]
        return "  ".join(aligned).rstrip()

    lines = [text(table[0])]
    for row, line in zip(report, table[1:], strict=True):
        lines.append(text(line))
        lines += [
            f"    {error['key']}: {error['message']}" for error in row.get("latest_errors", ())
        ]
    return "\n".join(lines)


def confirm(question: str) -> str:
    """The answer typed, stripped; empty when there is no terminal to answer from."""
    try:
        return input(question).strip()
    except EOFError:
        return ""


def overlaps_production(prefix: str) -> bool:
    """Whether schemas under prefix could be production schemas."""
    if not pipeline.production_prefix:  # production schemas are named plainly: each module's name
        names = [short_name(module) for module in pipeline.modules] + ["_versions"]
        return not prefix or any(name.startswith(prefix) for name in names)
    production = pipeline.production_prefix
    return prefix.startswith(production) or production.startswith(prefix)


def reset_plan(prefix: str | None = None) -> list[str]:
    """The schemas `reset` drops: every schema named with the prefix, downstream first.

    That is the pipeline's schemas (their tables, jobs tables and the leftovers of
    renamed tables included), the versions schema, and schemas of modules since
    renamed or removed. Raises ValueError for a prefix that could name production.
    """
    prefix = pipeline.schema_prefix() if prefix is None else prefix
    if not prefix or overlaps_production(prefix):
        raise ValueError(
            f"refusing to reset {prefix!r}: it is or overlaps the production prefix"
            f" {pipeline.production_prefix!r}; reset drops development and personal sets only"
        )
    existing = [name for name in dj.list_schemas() if name.startswith(prefix)]
    known = [prefix + short_name(module) for module in reversed(pipeline.modules)]
    return [name for name in existing if name not in known] + [
        name for name in known if name in existing
    ]


def reset(names: list[str]) -> None:
    """Drop the schemas, retrying those that another schema's foreign keys still hold."""
    connection = dj.conn()
    remaining = list(names)
    while remaining:
        failed: dict[str, Exception] = {}
        for name in remaining:
            try:
                connection.query(connection.adapter.drop_schema_sql(name))
            except Exception as error:  # noqa: BLE001 - the driver's own, when a foreign key holds it
                failed[name] = error
        if len(failed) == len(remaining):  # no progress
            name, reason = next(iter(failed.items()))
            raise dj.DataJointError(f"could not drop schema {name}: {reason}")
        remaining = list(failed)
