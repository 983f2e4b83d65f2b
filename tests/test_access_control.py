"""Access control on real servers: one user per role, every operation, as documented.

A generated project's admin declares and fills the pipeline; `access grant --apply` creates
one user per role of access.toml; each user then connects through DataJoint and tries every
operation of the role table in the generated docs/access.md. Every cell must match.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import BACKENDS, clean_environment, install

pytestmark = pytest.mark.slow

PACKAGE = "acl"
ROLES = ["viewer", "analyst", "operator", "developer", "admin"]
PASSWORD = "Pw-" + secrets.token_hex(8)

SETUP = """
import datajoint as dj
dj.config["safemode"] = False
import acl
from acl import __main__ as cli
from acl.pipeline import analysis, subject
assert cli.main(["declare"]) == 0
keys = [base + i for base in (1000, 2000, 3000, 4000) for i in range(5)]
subject.Subject.insert([(k, f"s{k}") for k in keys if k >= 2000])
for table in acl.auto_tables():
    table.populate("subject_id < 2000 or subject_id >= 3000", reserve_jobs=True)
(analysis.MultiModalAnalysis & "subject_id >= 3000 and subject_id < 4000").delete()
for i in range(5):  # a table for each role to try dropping
    analysis.schema(type(f"Disposable{i}", (dj.Manual,), {"definition": "d : int32"}))
"""

PROBE = """
import json, sys
import datajoint as dj
dj.config["safemode"] = False
import acl
from acl.pipeline import analysis, session, subject
I, prefix, other, grantee = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
conn = dj.conn()
results = {}

def attempt(name, action):
    try:
        action()
        results[name] = True
    except Exception as error:  # each refusal is a permission error of the server
        results[name] = False
        results[name + " error"] = str(error)[:200]
        if conn.in_transaction:
            conn.cancel_transaction()

acl.activate()

def fetch():
    for module in acl.MODULES:
        for name in module.schema.list_tables():
            module.schema.get_table(name).to_dicts(limit=1)

def populate(table, key):
    result = table.populate(key, reserve_jobs=True)
    jobs = (table.jobs & key).to_dicts()
    assert len(table & key) == 1, f"not made: {result} {jobs}"

def delete_cascade():
    (subject.Subject & {"subject_id": 4000 + I}).delete()
    assert not len(session.Session & {"subject_id": 4000 + I}), "not deleted"

def declare(schema_name):
    schema = dj.Schema(schema_name)
    schema(type(f"Note{I}", (dj.Manual,), {"definition": "note_id : int32"}))

def drop():
    analysis.schema.get_table(f"disposable{I}").drop_quick()

def grant():
    if conn.adapter.backend == "postgresql":  # without the right PostgreSQL only warns: check
        table = f'"{prefix}subject"."subject"'
        conn.query(f'GRANT INSERT ON {table} TO "{grantee}"')
        granted = f"SELECT has_table_privilege('{grantee}', '{table}', 'INSERT')"
        assert conn.query(granted).fetchone()[0], "no privilege was granted"
        conn.query(f'REVOKE INSERT ON {table} FROM "{grantee}"')
    else:
        conn.query(f"GRANT SELECT ON `{prefix}subject`.* TO '{grantee}'@'%%'")  # %-formatted

def fetch_other():
    table = conn.adapter.make_full_table_name(f"{other}subject", "subject")
    conn.query(f"SELECT * FROM {table}").fetchall()

attempt("fetch from every schema", fetch)
attempt("insert into an acquisition schema", lambda: subject.Subject.insert1((1000 + I, "new")))
attempt("populate a processing schema", lambda: populate(session.Session, {"subject_id": 2000 + I}))
attempt("populate an analysis schema", lambda: populate(analysis.MultiModalAnalysis, {"subject_id": 3000 + I}))
attempt("delete upstream, cascading downstream", delete_cascade)
attempt("declare a table in a production schema", lambda: declare(f"{prefix}analysis"))
attempt("declare a table in a development schema", lambda: declare(f"dev_{prefix}scratch{I}"))
attempt("drop a production table", drop)
attempt("grant access to someone else", grant)
attempt("fetch from another prefix's schemas", fetch_other)
print(json.dumps(results))
"""

TEARDOWN = """
import sys
import datajoint as dj
conn = dj.conn()
prefix, other, users = sys.argv[1], sys.argv[2], sys.argv[3:]
postgres = conn.adapter.backend == "postgresql"
for name in dj.list_schemas():
    if name.startswith((prefix, other, "dev_" + prefix)):
        conn.query(f'DROP SCHEMA "{name}" CASCADE' if postgres else f"DROP DATABASE `{name}`")
for user in users:
    if postgres:
        conn.query(f'DROP OWNED BY "{user}"')
        conn.query(f'DROP ROLE IF EXISTS "{user}"')
    else:
        conn.query(f"DROP USER IF EXISTS '{user}'@'%'")
"""


def documented_matrix(project: Path) -> dict[str, dict[str, str]]:
    """operation -> role -> cell, from the generated docs/access.md."""
    text = (project / "docs" / "access.md").read_text()
    table = text.split("<!-- access-matrix:start -->")[1].split("<!-- access-matrix:end -->")[0]
    lines = [line for line in table.strip().splitlines() if not line.startswith("|--")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[1:] == ROLES
    matrix = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        matrix[cells[0]] = dict(zip(ROLES, cells[1:], strict=True))
    return matrix


def expected(cell: str, backend: str) -> bool:
    if cell in {"PostgreSQL only", "MySQL only"}:
        return backend == {"PostgreSQL only": "postgresql", "MySQL only": "mariadb"}[cell]
    assert cell in {"yes", "no"}, cell
    return cell == "yes"


@pytest.fixture(scope="module")
def acl_project(cookies_session, project_env):
    result = cookies_session.bake(
        extra_context={
            "package_name": PACKAGE,
            "project_name": "ACL",
            "object_store": "none",
            # An acquisition, a processing (Imported: populated) and an analysis schema.
            "schemas": "subject; session [processing] <- subject; analysis <- session",
        }
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    install(project_env, project)
    return project


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_every_role_can_do_exactly_what_the_role_table_says(acl_project, project_env, backend):
    python = str(project_env / "bin" / "python")
    tag = secrets.token_hex(3)
    prefix, other = f"acl_{tag}_", f"oth_{tag}_"
    admin = clean_environment(**BACKENDS[backend], ACL_SCHEMA_PREFIX=prefix, NEW_PASSWORD=PASSWORD)
    users = {role: f"acl_{role}_{tag}" for role in ROLES}
    groups = [f"{prefix}{role}" for role in ROLES] if backend == "postgresql" else []

    def run(code_or_args: list[str], env: dict) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [python, *code_or_args],
            cwd=acl_project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    try:
        run(["-c", SETUP], admin)
        run(
            ["-c", SETUP.split("keys =")[0]], {**admin, "ACL_SCHEMA_PREFIX": other}
        )  # another schema set
        for role, user in users.items():
            grant = run(
                [
                    "-m",
                    PACKAGE,
                    "access",
                    "grant",
                    user,
                    role,
                    "--apply",
                    "--password-env",
                    "NEW_PASSWORD",
                ],
                admin,
            )
            assert PASSWORD not in grant.stdout + grant.stderr  # never echoed
        # Applying twice leaves the same state.
        run(
            [
                "-m",
                PACKAGE,
                "access",
                "grant",
                users["viewer"],
                "viewer",
                "--apply",
                "--password-env",
                "NEW_PASSWORD",
            ],
            admin,
        )

        matrix = documented_matrix(acl_project)
        mismatches = []
        for index, (role, user) in enumerate(users.items()):
            env = {**admin, "DJ_USER": user, "DJ_PASS": PASSWORD}
            probe = run(["-c", PROBE, str(index), prefix, other, users["viewer"]], env)
            results = json.loads(probe.stdout.strip().splitlines()[-1])
            for operation, cells in matrix.items():
                if results[operation] != expected(cells[role], backend):
                    reason = results.get(operation + " error", "allowed")
                    mismatches.append(f"{role}: {operation}: got {results[operation]} ({reason})")
        assert not mismatches, "\n".join(mismatches)

        revoked = run(["-m", PACKAGE, "access", "revoke", users["analyst"], "--apply"], admin)
        assert "REVOKE" in revoked.stdout
        refused = subprocess.run(
            [python, "-c", PROBE, "1", prefix, other, users["viewer"]],
            cwd=acl_project,
            env={**admin, "DJ_USER": users["analyst"], "DJ_PASS": PASSWORD},
            capture_output=True,
            text=True,
            check=False,
        )
        assert (
            refused.returncode != 0
            or not json.loads(refused.stdout.strip().splitlines()[-1])[
                "populate an analysis schema"
            ]
        )
    finally:
        subprocess.run(
            [python, "-c", TEARDOWN, prefix, other, *users.values(), *groups],
            cwd=acl_project,
            env={**admin, "ACL_SCHEMA_PREFIX": "unused_"},
            capture_output=True,
            check=False,
        )


def test_bucket_policies_follow_the_iam_grammar(acl_project, project_env):
    python = str(project_env / "bin" / "python")
    env = clean_environment()
    for role in ROLES:
        done = subprocess.run(
            [
                python,
                "-m",
                PACKAGE,
                "access",
                "policy",
                role,
                "--bucket",
                "lab-data",
                "--location",
                "acl",
            ],
            cwd=acl_project,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        policy = json.loads(done.stdout)
        assert policy["Version"] == "2012-10-17"
        for statement in policy["Statement"]:
            assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
            assert statement["Effect"] in {"Allow", "Deny"}
            assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])
            for action in statement["Action"]:
                assert re.fullmatch(r"s3:(GetObject|PutObject|DeleteObject|ListBucket)", action)
            for resource in statement["Resource"]:
                assert re.fullmatch(
                    r"arn:aws:s3:::lab-data(/acl/_(hash|schema)/acl_[a-z_]+/\*)?", resource
                )
        actions = {a for s in policy["Statement"] for a in s["Action"]}
        assert ("s3:PutObject" in actions) == (role in {"analyst", "operator", "admin"})
        assert ("s3:DeleteObject" in actions) == (role in {"analyst", "operator", "admin"})
        if role == "analyst":
            writes = next(s for s in policy["Statement"] if s["Action"] == ["s3:PutObject"])
            assert all("_analysis/" in resource for resource in writes["Resource"])
