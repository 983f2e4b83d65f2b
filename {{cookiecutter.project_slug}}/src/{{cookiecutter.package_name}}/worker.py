"""Worker: populate every auto-populated table, upstream first, with job reservation.

Start any number of workers, on any number of machines, against one database:
DataJoint's jobs tables (``populate(reserve_jobs=True)``) give each key to one
worker only.

    python -m <package>.worker                  # one pass over every table, then exit
    python -m <package>.worker --loop 60        # a pass every 60 s until stopped
    python -m <package>.worker --schema ephys   # only the tables of some schemas

Exit status: 0 when every key tried was made; 1 when a make() failed (logged with
its key, and recorded in the table's jobs table: see ``python -m <package> status``);
2 on a usage error; 128 + N when stopped by signal N (143 for SIGTERM, 130 for SIGINT).

Stopping: SIGTERM or SIGINT abandons the key in progress. Its transaction is rolled
back, so no partial rows remain, and its job goes back to pending for any worker to
take. A worker killed with SIGKILL cannot do that: its key stays reserved until a
worker started with ``--orphan-timeout SECONDS`` (longer than your slowest make())
re-queues reservations older than that, or until ``python -m <package> status
--release-orphans SECONDS`` does it once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence

import datajoint as dj

from . import activate, alerts, auto_tables
from .utils import datajoint_logs_to_stderr

log = logging.getLogger(__name__)

STOPPED_BY = "SystemExit"  # DataJoint records an interrupted make() with this error


def schema_of(table: type[dj.Table]) -> str:
    """The schema module a table belongs to, e.g. 'ephys'."""
    return table.__module__.rpartition(".")[2]


def select_tables(tables: Sequence[str], schemas: Sequence[str]) -> list[type[dj.Table]]:
    """The auto-populated tables to run, in dependency order; unknown names are an error."""
    available = auto_tables()
    unknown = [name for name in tables if name not in {t.__name__ for t in available}]
    unknown += [f"schema {name}" for name in schemas if name not in set(map(schema_of, available))]
    if unknown:
        known = ", ".join(table.__name__ for table in available)
        raise ValueError(f"unknown {', '.join(unknown)} (auto-populated tables: {known})")
    return [
        table
        for table in available
        if (not tables or table.__name__ in tables) and (not schemas or schema_of(table) in schemas)
    ]


def release_abandoned(table: type[dj.Table]) -> int:
    """Put the jobs this worker holds or just interrupted back to pending for others."""
    jobs = table.jobs
    mine = jobs & {"connection_id": table.connection.connection_id}
    abandoned = [
        {name: row[name] for name in jobs.primary_key}
        for row in mine.proj("status", "error_message").to_dicts()
        if row["status"] == "reserved"
        or (row["status"] == "error" and row["error_message"].startswith(STOPPED_BY))
    ]
    for key in abandoned:
        (jobs & key).delete_quick()
    if abandoned:
        jobs.refresh()
    return len(abandoned)


def run_pass(
    tables: list[type[dj.Table]], max_calls: int | None, orphan_timeout: float | None
) -> tuple[int, int]:
    """Populate each table once, upstream first; returns (keys made, keys failed)."""
    made = failed = 0
    for table in tables:
        if max_calls is not None and made + failed >= max_calls:
            break
        if orphan_timeout:
            orphans = table.jobs.refresh(orphan_timeout=orphan_timeout)["orphaned"]
            if orphans:
                log.warning("%s: re-queued %d orphaned reservation(s)", table.__name__, orphans)
        budget = None if max_calls is None else max_calls - made - failed
        try:
            result = table.populate(reserve_jobs=True, suppress_errors=True, max_calls=budget)
        except SystemExit:
            released = release_abandoned(table)
            log.warning(
                "%s: stopped; %d interrupted key(s) back to pending", table.__name__, released
            )
            raise
        for key, message in result["error_list"]:
            log.error("%s %s failed: %s", table.__name__, key, message)
        made += result["success_count"]
        failed += len(result["error_list"])
        if result["success_count"] or result["error_list"]:
            log.info(
                "%s: %d made, %d failed",
                table.__name__,
                result["success_count"],
                len(result["error_list"]),
            )
    return made, failed


def stop_on(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM stop the worker the way DataJoint's populate stops on SIGTERM."""
    raise SystemExit(f"{signal.Signals(signum).name} received")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__name__}",
        description="Populate the pipeline's tables with job reservation.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    mode.add_argument(
        "--loop", type=float, metavar="SECONDS", help="repeat, sleeping between passes"
    )
    parser.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    parser.add_argument(
        "--schema", action="append", default=[], help="only this schema (repeatable)"
    )
    parser.add_argument("--max-calls", type=int, metavar="N", help="at most N keys per pass")
    parser.add_argument(
        "--orphan-timeout",
        type=float,
        metavar="SECONDS",
        help="re-queue reservations older than this (workers that were killed)",
    )
    parser.add_argument(
        "--alerts",
        action="store_true",
        help='after each pass, report new errors as `watch` does ("alerts" in datajoint.json)',
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    datajoint_logs_to_stderr()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tables = select_tables(args.table, args.schema)
        settings = alerts.configured_settings() if args.alerts else None
    except ValueError as error:  # AlertError is a ValueError too
        parser.error(str(error))
    activate()
    log.info("worker started: %s", ", ".join(f"{schema_of(t)}.{t.__name__}" for t in tables))
    previous = {
        signum: signal.signal(signum, stop_on) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    errors = 0
    try:
        while True:
            made, failed = run_pass(tables, args.max_calls, args.orphan_timeout)
            errors += failed
            if settings is not None:
                try:
                    alerts.check(settings)
                except alerts.AlertError as error:
                    log.warning("%s", error)
            if args.loop is None:
                break
            if not (made or failed):
                time.sleep(args.loop)
    except SystemExit as stop:
        log.warning("worker stopped: %s", stop)
        return 128 + (signal.SIGINT if "SIGINT" in str(stop) else signal.SIGTERM)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("worker finished: %s", "errors were met" if errors else "no errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
