"""Failed and reserved jobs of the auto-populated tables, through DataJoint's jobs API.

Every Imported and Computed table has a jobs table (``Table.jobs``, DataJoint 2.x's
"AutoPopulate 2.0") where ``populate(reserve_jobs=True)`` records each key as pending,
reserved, success, error or ignore. ``listing`` shows errors and reservations;
``retry`` puts errors back to pending, so the next ``populate`` or worker pass makes
them again; ``clear`` deletes them (their keys are pending again at the next refresh,
as DataJoint re-adds every key of the key source that has no job).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import datajoint as dj
from datajoint.jobs import Job

from .operations import existing_jobs, label
from .project import pipeline

STATUSES = ("error", "reserved")
FIELDS = ("error_message", "host", "pid", "created_time", "reserved_time", "completed_time")


def select(tables: list[str]) -> list[type[dj.Table]]:
    """Auto-populated tables by class name or schema.Class; all when none are given."""
    available = pipeline.auto_tables()
    names = {table.__name__ for table in available} | {label(table) for table in available}
    unknown = [name for name in tables if name not in names]
    if unknown:
        known = ", ".join(label(table) for table in available)
        raise ValueError(f"no auto-populated table {', '.join(unknown)}; known: {known}")
    return [
        table
        for table in available
        if not tables or table.__name__ in tables or label(table) in tables
    ]


def parse_key(pairs: list[str]) -> dict[str, Any]:
    """`attr=value` pairs as a restriction; whole numbers become ints."""
    key: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"key {pair!r} is not of the form attribute=value")
        value = value.strip()
        key[name.strip()] = int(value) if re.fullmatch(r"-?[0-9]+", value) else value
    return key


def jobs_of(table: type[dj.Table]) -> Job | None:
    """The table's jobs table, if the table and its jobs table exist."""
    return existing_jobs(table) if table.database and table().is_declared else None


def matching(
    table: type[dj.Table], status: str, key: dict[str, Any], pattern: str | None
) -> list[dict[str, Any]]:
    """Jobs of one table with the status, restricted by key and message pattern."""
    jobs = jobs_of(table)
    if jobs is None or set(key) - set(jobs.primary_key):
        return []  # no jobs yet, or the key names attributes this table does not have
    shown = (jobs & f"status='{status}'").proj(*FIELDS)
    shown = shown & key if key else shown
    rows = shown.to_dicts()
    if pattern is not None:
        search = re.compile(pattern)
        rows = [row for row in rows if search.search(row["error_message"] or "")]
    return rows


def server_now(connection: dj.Connection) -> datetime:
    """The database server's clock, which wrote the jobs' times (no time zone, as they are)."""
    return connection.query("SELECT LOCALTIMESTAMP(3)").fetchone()[0]


def listing(
    tables: list[str], key: dict[str, Any], pattern: str | None, statuses=STATUSES
) -> list[dict[str, Any]]:
    """Errors and reservations: table, status, key, host, pid, age (seconds), message."""
    selected = select(tables)
    pipeline.activate(create=False)
    result = []
    now = server_now(dj.conn())
    for table in selected:
        for status in statuses:
            for row in matching(table, status, key, pattern):
                since = row["completed_time"] if status == "error" else row["reserved_time"]
                since = since or row["created_time"]
                result.append(
                    {
                        "table": label(table),
                        "status": status,
                        "key": {name: row[name] for name in row if name not in FIELDS},
                        "host": row["host"],
                        "pid": row["pid"],
                        "age": (now - since).total_seconds() if since else None,
                        "message": row["error_message"],
                    }
                )
    return result


def errors(
    tables: list[str], key: dict[str, Any], pattern: str | None
) -> Iterator[tuple[Job, dict[str, Any]]]:
    """Each matching error as its jobs table and job key: what `retry` and `clear` act on."""
    selected = select(tables)
    pipeline.activate(create=False)
    for table in selected:
        jobs = jobs_of(table)
        if jobs is not None:
            for row in matching(table, "error", key, pattern):
                yield jobs, {name: row[name] for name in jobs.primary_key}


def retry(tables: list[str], key: dict[str, Any], pattern: str | None) -> int:
    """Put matching errors back to pending, as DataJoint re-queues orphans; returns how many."""
    count = 0
    for jobs, job_key in errors(tables, key, pattern):
        with jobs.connection.transaction:
            (jobs & job_key).delete_quick()
            priority = jobs.connection._config.jobs.default_priority
            jobs.insert1({**job_key, "status": "pending", "priority": priority})
        count += 1
    return count


def clear(tables: list[str], key: dict[str, Any], pattern: str | None) -> int:
    """Delete matching error records; returns how many."""
    count = 0
    for jobs, job_key in errors(tables, key, pattern):
        (jobs & job_key).delete_quick()
        count += 1
    return count


def format_listing(rows: list[dict[str, Any]]) -> str:
    """The listing as text, one job a line."""
    if not rows:
        return "No failed or reserved jobs."
    lines = [f"{'table':<32} {'status':<8} {'age':>8} {'host':<16} {'pid':>7}  key: message"]
    for row in rows:
        age = "" if row["age"] is None else f"{row['age']:.0f}s"
        message = (row["message"] or "").splitlines()[0] if row["message"] else ""
        lines.append(
            f"{row['table']:<32} {row['status']:<8} {age:>8} {row['host'] or '':<16}"
            f" {row['pid']:>7}  {row['key']}: {message}"
        )
    return "\n".join(lines)
