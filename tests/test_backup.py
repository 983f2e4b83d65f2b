"""backup and restore: a generated project's pipeline round-trips into another prefix.

Real servers and clients: MariaDB with mysqldump/mysql, PostgreSQL with pg_dump/psql, and the
file store. The restore itself compares row counts and object checksums with the backup's
manifest; the test then reads every table under both prefixes and compares the values.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest
from conftest import BACKENDS, TEMPLATE, clean_environment, install
from cookiecutter.main import cookiecutter

pytestmark = pytest.mark.slow

PACKAGE = "bkup"

FILL = f"""
import {PACKAGE}
{PACKAGE}.activate()
{PACKAGE}.insert_sample_data()  # and populate
"""

# Every table of the pipeline (parts included) under one prefix: a digest of all values, with
# the prefix itself (in stored objects' paths) left out, and the number of rows.
DIGEST = f"""
import hashlib, json, sys
import datajoint as dj
import {PACKAGE}

def tables():
    for module in {PACKAGE}.MODULES:
        for table in {PACKAGE}.tables(module):
            yield from {PACKAGE}.with_parts(table)

prefix = sys.argv[1]
{PACKAGE}.activate(prefix)
rows = {{t.__name__: sorted(t.to_dicts(), key=repr) for t in tables()}}
text = json.dumps(rows, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
print(sum(map(len, rows.values())), hashlib.sha256(text.replace(prefix, "<prefix>").encode()).hexdigest())
"""

DROP = f"""
import sys
import datajoint as dj
import {PACKAGE}
connection = dj.conn()
for prefix in sys.argv[1:]:
    for name in [*reversed({PACKAGE}.schema_names(prefix).values()), prefix + "_versions"]:
        dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)
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


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_backup_and_restore_into_another_prefix(project, backend, tmp_path):
    venv, root = project
    python = str(venv / "bin" / "python")
    tag = secrets.token_hex(3)
    old, new = f"bk_{tag}_", f"rs_{tag}_"
    env = clean_environment(**BACKENDS[backend], BKUP_SCHEMA_PREFIX=old)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [python, *args], cwd=root, env=env, capture_output=True, text=True, check=False
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    try:
        run("-c", FILL)
        folder = tmp_path / "backup"
        out = run("-m", PACKAGE, "backup", "--to", str(folder)).stdout
        assert f"of {old!r} to {folder}" in out
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["prefix"] == old and manifest["backend"] == BACKENDS[backend]["DJ_BACKEND"]
        assert all(count > 0 for table, count in manifest["rows"].items() if "~" not in table)
        assert manifest["objects"] and all(
            (folder / "objects" / path).is_file() for path in manifest["objects"]
        )
        out = run("-m", PACKAGE, "restore", str(folder), "--prefix", new).stdout
        assert "row counts and checksums match" in out
        rows, digest = run("-c", DIGEST, old).stdout.split()[-2:]
        assert int(rows) > 0
        assert run("-c", DIGEST, new).stdout.split()[-2:] == [rows, digest]  # the same values
        # The restored objects are filed under the new schema names.
        store = root / "data" / "backup-check" / "_hash"
        assert any(store.glob(f"{new}*/*")) and any(store.glob(f"{old}*/*"))

        # Refusals: one line, exit 1, nothing changed.
        again = run("-m", PACKAGE, "restore", str(folder), "--prefix", new, check=False)
        assert again.returncode == 1 and "schemas exist already" in again.stderr
        same = run("-m", PACKAGE, "restore", str(folder), "--prefix", old, check=False)
        assert same.returncode == 1 and "another prefix" in same.stderr
        full = run("-m", PACKAGE, "backup", "--to", str(folder), check=False)
        assert full.returncode == 1 and "not empty" in full.stderr
        for result in (again, same, full):
            assert "Traceback" not in result.stderr
    finally:
        run("-c", DROP, old, new, check=False)
