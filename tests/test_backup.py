"""backup and restore: a generated project's pipeline round-trips into another prefix.

Real servers and clients, as a lab member with a password and rights on its own prefix only:
MariaDB with mysqldump/mysql, a scram-sha-256 PostgreSQL with pg_dump/psql, and the file
store. Rows hold what breaks naive dump handling (the schema's own name, SQL, quotes,
backslashes, newlines, `\\.`), an in-table <blob>, attachments in the table and in the store,
an object, json and dates. Every table is then read under both prefixes, through the driver
and through DataJoint, and compared value by value. Crafted archives are refused with one
line and nothing created; a restore failing on the way leaves nothing behind; a backup killed
at random moments never leaves an archive restore accepts (bench/backup.py, which
tests/test_bench.py runs at a tiny size).
"""

from __future__ import annotations

import json
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_environment, install
from cookiecutter.main import cookiecutter

pytestmark = pytest.mark.slow

PACKAGE = "bkup"

FILL = f"""
import sys
sys.path.insert(0, "tests")
from sample_data import SAMPLE_DATA
from {PACKAGE} import pipeline
pipeline.activate()
pipeline.insert_sample_data(SAMPLE_DATA)  # and populate
"""

# A table of awkward values in the subject schema; its name, SQL and quoting in the values.
EXTRAS = f"""
import datetime, sys, tempfile
from pathlib import Path
import numpy as np
import datajoint as dj
from {PACKAGE} import pipeline, subject
pipeline.activate()

name = pipeline.schema_prefix() + "subject"

@subject.schema
class Extras(dj.Manual):
    definition = '''
    -> subject.Subject
    ---
    note : varchar(1000)
    data : <blob>
    inline_file : <attach>
    stored_file : <attach@main>
    stored_blob : <blob@main>
    thing : <object@main>
    meta : json
    day : date
    moment : datetime(3)
    '''

folder = Path(tempfile.mkdtemp())
tricky = (f"{{name}} `{{name}}`.`subject` USE {{name}}; DROP DATABASE {{name}};\\n"
          f"\\\\.\\n\\t-- /* x */ 'q' \\"d\\" \\\\ \\\\' é ✓ {{name}}.subject")
(folder / f"{{name}}.txt").write_bytes(tricky.encode() + bytes(range(256)))
(folder / "thing.bin").write_bytes(b"\\x00\\n\\\\.\\n" + name.encode() * 50)
subject.Subject.insert1({{"subject_id": 99, "subject_name": name}})
Extras.insert1({{
    "subject_id": 99, "note": tricky,
    "data": {{"schema": name, "array": np.arange(1000, dtype=np.float32),
              "raw": bytes(range(256)) * 3 + name.encode()}},
    "inline_file": str(folder / f"{{name}}.txt"),
    "stored_file": str(folder / f"{{name}}.txt"),
    "stored_blob": np.frombuffer(tricky.encode(), dtype=np.uint8),
    "thing": str(folder / "thing.bin"),
    "meta": {{"path": f"_hash/{{name}}/abc", "schema": name, "text": tricky}},
    "day": datetime.date(1999, 12, 31),
    "moment": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000),
}})
"""

# Every table of the schemas under two prefixes, compared value by value: the rows as the
# driver returns them (bytes for bytes), and as DataJoint decodes them (blobs, attachments
# and objects read back from the store). Only DataJoint's own addresses may differ: the
# `path`/`schema` of store columns and `~lineage` entries, which name the new schemas.
COMPARE = f"""
import json, os, sys, tempfile
import numpy as np
import datajoint as dj
from {PACKAGE}.toolkit.utils import prepare_stores

old_prefix, new_prefix = sys.argv[1:3]
prepare_stores()
connection = dj.conn()
adapter = connection.adapter
mapping = {{name: new_prefix + name.removeprefix(old_prefix)
           for name in dj.list_schemas() if name.startswith(old_prefix)}}

def canon(value, attribute=None):
    if attribute is not None and getattr(attribute.codec, "name", "") == "attach":
        return (os.path.basename(value), open(value, "rb").read())
    if type(value).__name__ == "ObjectRef":
        return ("object", value.read())
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("array", value.shape, [canon(v) for v in value.ravel()])
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return sorted((k, canon(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    return value

def moved(value):
    value = json.loads(value) if isinstance(value, (str, bytes)) else dict(value)
    for old, new in mapping.items():
        for root in ("_hash", "_schema"):
            if value.get("path", "").startswith(f"{{root}}/{{old}}/"):
                value["path"] = f"{{root}}/{{new}}/" + value["path"][len(root) + len(old) + 2:]
        if value.get("schema") == old:
            value["schema"] = new
    return value

def read(schema, table, decoded):
    full = f"{{adapter.quote_identifier(schema)}}.{{adapter.quote_identifier(table)}}"
    if not decoded:
        return full, sorted(connection.query(f"SELECT * FROM {{full}}").fetchall(), key=repr)
    free = dj.FreeTable(connection, full)
    attributes = free.heading.attributes
    if adapter.backend == "postgresql":  # DataJoint 2.3.5 cannot decode an in-table <attach>
        # there (psycopg2's memoryview has no .index()); its bytes are compared raw above
        inline = [n for n, a in attributes.items()
                  if getattr(a.codec, "name", "") == "attach" and a.store is None]
        free = free.proj(*[n for n in free.heading.secondary_attributes if n not in inline])
        attributes = free.heading.attributes
    rows = [{{k: canon(v, attributes[k]) for k, v in row.items()}} for row in free.to_dicts()]
    return full, sorted(rows, key=repr)

tables = rows = 0
for old, new in mapping.items():
    names = [r[0] for r in connection.query(adapter.list_tables_sql(old))]
    assert sorted(names) == sorted(r[0] for r in connection.query(adapter.list_tables_sql(new)))
    for table in names:
        full, before = read(old, table, False)
        _, after = read(new, table, False)
        heading = dj.FreeTable(connection, full).heading if not table.startswith("~") else None
        stored = [i for i, a in enumerate(heading.attributes.values())
                  if a.is_hash_object or a.is_schema_object] if heading else []
        if table == "~lineage":
            def renamed(row):
                schema, _, rest = row[2].partition(".")
                return (*row[:2], mapping.get(schema, schema) + "." + rest)
            before = sorted(map(renamed, before), key=repr)
        for one, other in zip(before, after, strict=True):
            for i, (a, b) in enumerate(zip(one, other, strict=True)):
                if i in stored and a is not None:  # DataJoint's address of an object
                    parsed = json.loads(a) if isinstance(a, (str, bytes)) else dict(a)
                    assert moved(a) == moved(b) != parsed, (full, a, b)
                    continue
                assert type(a) is type(b) and a == b, (full, i, a, b)
        rows += len(before)
        tables += 1
        if not table.startswith("~"):  # as DataJoint decodes them, downloads apart
            os.chdir(tempfile.mkdtemp())
            _, one = read(old, table, True)
            os.chdir(tempfile.mkdtemp())
            _, other = read(new, table, True)
            assert one == other, (full, one[:1], other[:1])
print(tables, rows)
"""

DROP = f"""
import sys
from {PACKAGE}.toolkit import operations
for prefix in sys.argv[1:]:
    operations.reset(operations.reset_plan(prefix))
"""


@pytest.fixture(scope="module")
def project(project_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("backup")
    path = cookiecutter(
        str(TEMPLATE), no_input=True, output_dir=str(out),
        extra_context={"project_name": "Backup Check", "package_name": PACKAGE},
    )  # fmt: skip
    install(project_env, path)
    return project_env, out / "backup-check"


class Lab:
    """Commands of the rendered project as a lab member on one backend, under a prefix."""

    def __init__(self, project, account, prefix: str):
        venv, self.root = project
        self.python = str(venv / "bin" / "python")
        self.env = clean_environment(**account.env, BKUP_SCHEMA_PREFIX=prefix)

    def run(self, *args: str, check: bool = True, stdin: str | None = None):
        result = subprocess.run(
            [self.python, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
            check=False, input=stdin,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def schemas(self, prefix: str) -> list[str]:
        code = ("import json, datajoint as dj; "
                f"print(json.dumps(sorted(s for s in dj.list_schemas() if s.startswith({prefix!r}))))")  # fmt: skip
        return json.loads(self.run("-c", code).stdout.strip().splitlines()[-1])

    def objects(self, prefix: str) -> list[Path]:
        store = self.root / "data" / "backup-check"
        return [p for root in ("_hash", "_schema") for p in store.glob(f"{root}/{prefix}*/**/*")
                if p.is_file()]  # fmt: skip


@pytest.fixture(params=["mariadb", "postgresql"])
def filled(request, project, lab_accounts):
    """A lab's pipeline with sample data and the awkward rows, under a prefix of its own."""
    account = lab_accounts[request.param]
    tag = secrets.token_hex(2)
    old, new = f"{account.prefix}bk{tag}_", f"{account.prefix}rs{tag}_"
    lab = Lab(project, account, old)
    try:
        lab.run("-c", FILL + EXTRAS)  # one Python start
        yield lab, old, new
    finally:
        lab.run("-c", DROP, old, new, check=False)


def private(folder: Path) -> bool:
    """Every file under folder is 0600, and every folder (itself included) 0700."""
    paths = [folder, *folder.rglob("*")]
    return all(stat.S_IMODE(p.stat().st_mode) == (0o600 if p.is_file() else 0o700) for p in paths)


def test_round_trip_brings_every_value_back(filled, tmp_path):
    lab, old, new = filled
    out = lab.run("-m", PACKAGE, "backup").stdout  # the default folder, under backups/
    folder = Path(out.strip().rsplit(" to ", 1)[1])
    assert folder.parent == lab.root / "backups" and private(folder)
    assert private(lab.root / "backups")
    subprocess.run(["git", "init", "-q"], cwd=lab.root, check=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / "manifest.json")],
                             cwd=lab.root, check=False)  # fmt: skip
    assert ignored.returncode == 0, "backups/ is not in the generated .gitignore"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["prefix"] == old and sum(manifest["rows"].values()) > 0
    assert manifest["objects"] and all(len(sha) == 64 for sha in manifest["dumps"].values())

    out = lab.run("-m", PACKAGE, "restore", str(folder), "--prefix", new).stdout
    assert "row counts and checksums match" in out
    tables, rows = map(int, lab.run("-c", COMPARE, old, new).stdout.split()[-2:])
    assert tables >= 10 and rows > 50
    assert lab.objects(new) and len(lab.objects(new)) == len(lab.objects(old))

    # Refusals: one line, exit 1, nothing changed.
    again = lab.run("-m", PACKAGE, "restore", str(folder), "--prefix", new, check=False)
    assert again.returncode == 1 and "schemas exist already" in again.stderr
    full = lab.run("-m", PACKAGE, "backup", "--to", str(folder), check=False)
    assert full.returncode == 1 and "not empty" in full.stderr
    for result in (again, full):
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    shutil.rmtree(lab.root / "backups")


# Crafted archives, each made from a good backup: restore refuses them, nothing created.
CRAFT = f"""
import hashlib, json, shutil, sys
from pathlib import Path
from {PACKAGE}.toolkit import backup

good, work, new = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()

def variant(name, change):
    folder = work / name
    shutil.copytree(good, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(folder, manifest)
    text = json.dumps(manifest)
    if manifest.pop("_truncate", False):
        text = json.dumps(manifest)[: len(text) // 2]
    (folder / "manifest.json").write_text(text)
    return folder

def dump_file(folder, manifest):
    return folder / sorted(manifest["dumps"])[-1]

def rewrite_dump(edit, resign=True):
    def change(folder, manifest):
        path = dump_file(folder, manifest)
        path.write_bytes(edit(path.read_bytes()))
        if resign:
            manifest["dumps"][sorted(manifest["dumps"])[-1]] = sha(path)
    return change

def cut(data):
    middle = data.index(b"\\n", len(data) // 2)
    return data[: middle + 4]

def extra_object(path):
    def change(folder, manifest):
        manifest["objects"][path] = "0" * 64
    return change

def drop_key(folder, manifest):
    del manifest["dumps"]

def truncate_manifest(folder, manifest):
    manifest["_truncate"] = True

def corrupt_object(folder, manifest):
    relative = sorted(manifest["objects"])[0]
    path = folder / "objects" / relative
    data = bytearray(path.read_bytes()); data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))

def dump_path(path):
    def change(folder, manifest):
        manifest["dumps"] = {{path: "0" * 64}}
    return change

mysql = backup.Server.from_config().backend == "mysql"
drop = b"DROP DATABASE `mysql`;\\n" if mysql else b"DROP DATABASE postgres;\\n"
other = (b"CREATE TABLE `mysql`.`evil` (\\n  `a` int\\n) ENGINE=InnoDB;\\n" if mysql
         else b"CREATE TABLE public.evil (\\n    a integer\\n);\\n")
cases = {{
    "dotdot object": extra_object("main/_hash/../../../../etc/passwd"),
    "absolute dump": dump_path("/etc/passwd"),
    "truncated dump": rewrite_dump(cut, resign=False),
    "truncated dump, resigned": rewrite_dump(cut),
    "corrupted object": corrupt_object,
    "extra DROP DATABASE": rewrite_dump(lambda data: data + drop),
    "DROP DATABASE after a row": rewrite_dump(
        lambda data: data.replace(b");\\n", b"); " + drop, 1) if mysql
        else data.replace(b"\\n\\\\.\\n", b"\\n\\\\.\\n" + drop, 1)),
    "another schema": rewrite_dump(lambda data: data + other),
    "truncated manifest": truncate_manifest,
    "manifest without dumps": drop_key,
}}
results = {{}}
for name, change in cases.items():
    folder = variant(name.replace(" ", "_").replace(",", ""), change)
    try:
        backup.restore(folder, new)
    except backup.BackupError as error:
        results[name] = str(error)
    else:
        results[name] = None
print(json.dumps(results))
"""


def test_crafted_archives_are_refused_and_nothing_is_created(filled, tmp_path):
    lab, _, new = filled
    good = tmp_path / "good"
    lab.run("-m", PACKAGE, "backup", "--to", str(good))
    result = lab.run("-c", CRAFT, str(good), str(tmp_path), new)
    refusals = json.loads(result.stdout.strip().splitlines()[-1])
    for name, message in refusals.items():
        assert message and "\n" not in message, (name, message)
    expected = {
        "dotdot object": "must be relative",
        "absolute dump": "must be relative",
        "truncated dump": "checksum",
        "truncated dump, resigned": "truncated",
        "corrupted object": "checksum",
        "extra DROP DATABASE": "not a statement our dumps contain",
        "DROP DATABASE after a row": "not a statement our dumps contain",
        "another schema": "not one of the backup's",
        "truncated manifest": "not valid JSON",
        "manifest without dumps": "'dumps'",
    }
    for name, fragment in expected.items():
        assert fragment in refusals[name], (name, refusals[name])
    assert lab.schemas(new) == [] and lab.objects(new) == []
    # The command line says it in one line, exit 1.
    cli = lab.run("-m", PACKAGE, "restore", str(tmp_path / "extra_DROP_DATABASE"),
                  "--prefix", new, check=False)  # fmt: skip
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().splitlines()[-1].startswith("error: ")
    # Production needs the prefix typed (here: no answer), as for other production actions.
    production = lab.run(
        "-c", f"import {PACKAGE}; print({PACKAGE}.pipeline.production_prefix)"
    ).stdout
    refused = lab.run("-m", PACKAGE, "restore", str(good), "--prefix",
                      production.strip().splitlines()[-1], check=False, stdin="")  # fmt: skip
    assert refused.returncode == 1 and "Nothing restored" in refused.stderr
    assert lab.schemas(production.strip().splitlines()[-1]) == []


# A restore that fails on the way: a row the server refuses (a duplicate key) in the last
# dump, checksum and counts made to match; and a fault after the objects were copied.
FAIL = f"""
import hashlib, json, sys
from pathlib import Path
from {PACKAGE}.toolkit import backup

folder, new, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
manifest = json.loads((folder / "manifest.json").read_text())
if where == "load":
    mysql = manifest["backend"] == "mysql"
    first_rows = []  # (dump, line number) of each table's first row, in the order loaded
    for relative in manifest["dumps"]:
        lines = (folder / relative).read_bytes().splitlines(keepends=True)
        for number, line in enumerate(lines[:-1]):
            following = lines[number + 1]
            if mysql and line.startswith(b"INSERT INTO ") and following.startswith(b"("):
                first_rows.append((relative, number + 1))
            if not mysql and line.startswith(b"COPY ") and not following.startswith(b"\\\\."):
                first_rows.append((relative, number + 1))
    relative, number = first_rows[-1]
    path = folder / relative
    lines = path.read_bytes().splitlines(keepends=True)
    row, head = lines[number], lines[number - 1]
    if mysql:
        assert head.endswith(b"VALUES\\n"), head  # MariaDB's mysqldump: a row per line
        lines.insert(number, row[:-2] + b",\\n")
        key = Path(relative).stem + "." + head.split(b"`")[1].decode()
    else:
        lines.insert(number, row)
        key = head.split(b" ")[1].decode().replace('"', "")
    path.write_bytes(b"".join(lines))
    manifest["dumps"][relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["rows"][key] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
else:
    def fault(*args):
        raise backup.BackupError("a fault injected after the objects were copied")
    backup.row_counts = fault
try:
    backup.restore(folder, new)
except backup.BackupError as error:
    print("refused:", error)
"""


@pytest.mark.parametrize("where", ["load", "after objects"])
def test_a_failing_restore_leaves_nothing(filled, tmp_path, where):
    lab, old, new = filled
    folder = tmp_path / "backup"
    lab.run("-m", PACKAGE, "backup", "--to", str(folder))
    out = lab.run("-c", FAIL, str(folder), new, where).stdout
    assert "refused:" in out, out
    if where == "load":
        assert "failed" in out  # the server's own message
    assert lab.schemas(new) == [] and lab.objects(new) == []
    assert lab.schemas(old) and lab.objects(old)  # the source untouched
