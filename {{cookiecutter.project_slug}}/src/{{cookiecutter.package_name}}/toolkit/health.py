"""Worker health for container health checks and Kubernetes probes.

A worker started with ``WORKER_HEARTBEAT_FILE`` set (the project's image sets it)
touches that file from a background thread every few seconds while it runs. The
check reads the file's age: missing or stale means the worker died, never got
going, or its process is frozen. A long make() does not make a worker unhealthy.

    python -m <package>.toolkit.health           # exit 0 when healthy, 1 (and one line why) when not
    python -m <package>.toolkit.health --database # and the database answers the worker's credentials

Probes run this file by its path (``python -P /app/src/<package>/toolkit/health.py``): it needs
only the standard library for the heartbeat, so a probe does not import the pipeline.
They check the heartbeat only: restarting workers does not mend a database that is down.

It also turns a database that cannot be used into one line for every command
(`database_errors_reported`): no credentials, a server that does not answer, or one
that refuses the connection.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_VARIABLE = "WORKER_HEARTBEAT_FILE"
INTERVAL = 10.0  # seconds between beats
MAX_AGE = 60.0  # seconds after which a heartbeat is stale


def lab_command() -> str:
    """The lab's command line, e.g. `python -m <package>`, for hints (once its Pipeline is built)."""
    project = sys.modules.get(f"{__package__}.project")
    current = getattr(project, "_current", None)
    return current.command if current is not None else "python -m <package>"


def heartbeat_file() -> Path | None:
    """The heartbeat file configured in the environment, if any."""
    value = os.environ.get(HEARTBEAT_VARIABLE)
    return Path(value) if value else None


def start_heartbeat(interval: float = INTERVAL) -> threading.Event | None:
    """Touch the heartbeat file now and every `interval` seconds; set the event to stop.

    Does nothing (returns None) when no heartbeat file is configured.
    """
    path = heartbeat_file()
    if path is None:
        return None
    try:
        path.write_text(f"{os.getpid()}\n", encoding="utf-8")
    except OSError as error:  # the work goes on; the health check will say why it fails
        log.warning("no heartbeat: cannot write %s (%s)", path, error.strerror or error)
        return None
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(OSError):  # a passing failure: the next beat tries again
                path.touch()

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    return stop


def heartbeat_problem(max_age: float) -> str | None:
    """Why the worker is not healthy by its heartbeat, or None when it is."""
    path = heartbeat_file()
    if path is None:
        return f"{HEARTBEAT_VARIABLE} is not set: no heartbeat to check"
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the worker is not running"
    if age > max_age:
        return f"heartbeat {path} is {age:.0f} s old (more than {max_age:.0f} s)"
    return None


#: MySQL and MariaDB errors that mean no usable connection, not a query's fault: the server
#: refuses the user or the host, has too many connections, or cannot be reached or was lost.
MYSQL_CONNECTION_ERRORS = {0, 1040, 1044, 1045, 1129, 1130, 1203, 1226, 1251, 1698}
MYSQL_CONNECTION_ERRORS |= {2002, 2003, 2005, 2006, 2013, 2026, 2055}
#: PostgreSQL SQLSTATEs (prefixes) with the same meaning: connection exceptions (08), a
#: refused login (28), no such database (3D000), too many connections (53300), a server
#: shutting down or starting (57P).
POSTGRES_CONNECTION_STATES = ("08", "28", "3D000", "53300", "57P")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and the errors it was raised from or while handling."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def connection_reason(error: BaseException) -> str | None:
    """The server's or the driver's own words when `error` means no usable connection."""
    kinds = {kind.__name__ for kind in type(error).__mro__}
    driver = type(error).__module__.partition(".")[0]
    if "LostConnectionError" in kinds:  # DataJoint's: the connection failed or was lost
        return ": ".join(str(arg) for arg in error.args if str(arg)) or "connection lost"
    if not kinds & {"OperationalError", "InterfaceError"}:
        return None
    if driver == "pymysql" and error.args and error.args[0] in MYSQL_CONNECTION_ERRORS:
        return str(error.args[-1]) or "the server closed the connection"
    if driver == "psycopg2":
        state = getattr(error, "pgcode", None)
        if state is None or state.startswith(POSTGRES_CONNECTION_STATES):
            return " ".join(str(error).split()) or "the server closed the connection"
    return None


def settings_problem() -> str | None:
    """What to run when no database user or password is configured, or None."""
    import datajoint as dj

    command = lab_command()
    config = dj.config.database
    if config.user is None:
        return (
            f"no database user configured: run `{command} dev-db start` for a"
            f" development database, or `{command} login` to save your"
            " credentials (or set DJ_USER and DJ_PASS)"
        )
    if config.password is None:
        return (
            f"no database password configured for {config.user}: run"
            f" `{command} login` to save it (or set DJ_PASS)"
        )
    return None


def database_failure(error: BaseException) -> str | None:
    """One line saying why the database cannot be used, or None when `error` is another one.

    Nothing configured, a server that does not answer (wrong host or port, down) or that
    refuses us (wrong password, no right to connect, too many connections): the line names
    the server and gives its own reason, or the commands that set a database up.
    """
    import datajoint as dj

    config = dj.config.database
    for cause in _causes(error):
        if isinstance(cause, dj.DataJointError) and str(cause).startswith(
            ("Database user not configured", "Database password not configured")
        ):
            return settings_problem() or str(cause)
        reason = connection_reason(cause)
        if reason is not None:
            where = config.host if ":" in str(config.host) else f"{config.host}:{config.port}"
            return f"cannot use the database at {where} as {config.user}: {reason}"
    return None


class _NoFallbackNoise(logging.Filter):
    """Drops DataJoint's "SSL connection failed (...). Falling back" warning when SSL was not
    the problem (nothing listens, the password is wrong: the error line says so) or when the
    server has no SSL at all, where falling back is what DataJoint's automatic mode means."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("SSL connection failed"):
            return True
        cause = record.args[0] if isinstance(record.args, tuple) and record.args else None
        text = str(cause).lower()
        return not (
            isinstance(cause, BaseException)
            and connection_reason(cause) is not None
            and ("ssl" not in text or "does not support ssl" in text)
        )


@contextlib.contextmanager
def _without_fallback_noise() -> Iterator[None]:
    quiet = _NoFallbackNoise()
    datajoint_log = logging.getLogger("datajoint")
    datajoint_log.addFilter(quiet)
    try:
        yield
    finally:
        datajoint_log.removeFilter(quiet)


@contextlib.contextmanager
def database_errors_reported() -> Iterator[None]:
    """Around a command: a database that cannot be used ends it with one line on stderr
    (`database_failure`) and exit status 2, not a traceback. Other errors pass through."""
    with _without_fallback_noise():
        try:
            yield
        except Exception as error:
            problem = database_failure(error)
            if problem is None:
                raise
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def database_problem() -> str | None:
    """Why the database does not answer, or None when it does."""
    import datajoint as dj

    with _without_fallback_noise():
        try:
            dj.conn().query("SELECT 1").fetchall()
        except Exception as error:  # noqa: BLE001  (each driver raises its own errors)
            problem = database_failure(error) or str(error)
            return f"database unreachable: {problem.removeprefix('cannot use the database at ')}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="health", description="Exit 0 when this container's worker is alive."
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=MAX_AGE,
        metavar="SECONDS",
        help=f"oldest acceptable heartbeat (default {MAX_AGE:.0f})",
    )
    parser.add_argument(
        "--database", action="store_true", help="also check that the database answers"
    )
    args = parser.parse_args(argv)
    problem = heartbeat_problem(args.max_age) or (database_problem() if args.database else None)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
