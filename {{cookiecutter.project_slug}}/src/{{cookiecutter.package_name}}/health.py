"""Worker health for container health checks and Kubernetes probes.

A worker started with ``WORKER_HEARTBEAT_FILE`` set (the project's image sets it)
touches that file from a background thread every few seconds while it runs. The
check reads the file's age: missing or stale means the worker died, never got
going, or its process is frozen. A long make() does not make a worker unhealthy.

    python -m <package>.health                 # exit 0 when healthy, 1 (and one line why) when not
    python -m <package>.health --database      # and the database answers the worker's credentials

Probes run this file by its path (``python -P /app/src/<package>/health.py``): it needs
only the standard library for the heartbeat, so a probe does not import the pipeline.
They check the heartbeat only: restarting workers does not mend a database that is down.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_VARIABLE = "WORKER_HEARTBEAT_FILE"
INTERVAL = 10.0  # seconds between beats
MAX_AGE = 60.0  # seconds after which a heartbeat is stale


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


def database_problem() -> str | None:
    """Why the database does not answer, or None when it does."""
    import datajoint as dj

    try:
        dj.conn().query("SELECT 1").fetchall()
    except Exception as error:  # noqa: BLE001  (each driver raises its own errors)
        return f"database unreachable: {error}"
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
