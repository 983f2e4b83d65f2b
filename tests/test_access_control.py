"""Access control on real servers: one hostile-named user per role, every operation, as documented.

A generated project's superuser declares and fills the pipeline and another project whose
prefix starts with ours; `access grant --apply` creates one user per role of access.toml
(the analyst onboarded by the admin user, the viewer demoted from operator); each user then
connects through DataJoint and tries every operation of the role table in the generated
docs/access.md, which must be the table the package derives from access.toml. Every cell
must match; the password must appear in no output, no error and no server log.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BACKENDS, clean_environment, install, mariadb_root, scram_psql

pytestmark = pytest.mark.slow
# Long and independent tests: the workers share them (see conftest.py).
SPREAD_OVER_WORKERS = True

PACKAGE = "acl"
ROLES = ["viewer", "analyst", "operator", "developer", "admin"]
#: Quotes, `$$`, a backslash, `%s` and non-ASCII: what broke the statements before.
HOSTILE = "o'b\"r$$\\%sö"
POSTGRES_LOG = Path("/var/log/postgresql")

SETUP = """
import json, sys
import datajoint as dj
dj.config["safemode"] = False
from acl import analysis, pipeline, session, subject
from acl.toolkit import access, cli
assert cli.main(pipeline, ["declare"]) == 0
if sys.argv[1] == "full":
    keys = [base + i for base in (1000, 2000, 3000, 4000) for i in range(5)]
    subject.Subject.insert([(k, f"s{k}") for k in keys if k >= 2000])
    for table in pipeline.auto_tables():
        table.populate("subject_id < 2000 or subject_id >= 3000", reserve_jobs=True)
    (analysis.MultiModalAnalysis & "subject_id >= 3000 and subject_id < 4000").delete()
    for i in range(5):  # a table for each role to try dropping
        analysis.schema(type(f"Disposable{i}", (dj.Manual,), {"definition": "d : int32"}))
# A Manual table in one schema of each kind, for the insert probes.
for module in (subject, session, analysis):
    module.schema(type("Scratch", (dj.Manual,), {"definition": "scratch_id : int32"}))
print(json.dumps(access.role_table(access.load_policy())))
"""

LATE = """
import datajoint as dj
from acl import analysis, pipeline
pipeline.activate()
analysis.schema(type("Late1", (dj.Manual,), {"definition": "late_id : int32"}))
"""

PROBE = """
import json, os, subprocess, sys
import datajoint as dj
dj.config["safemode"] = False
from acl import analysis, pipeline, session, subject
from acl.toolkit import cli
I, prefix, other, newcomer = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
conn = dj.conn()
results = {}

def attempt(name, action):
    try:
        action()
        results[name] = True
    except Exception as error:  # each refusal is a permission error of the server
        results[name] = False
        results[name + " error"] = str(error)[:300]
        if conn.in_transaction:
            conn.cancel_transaction()

pipeline.activate()

def fetch():
    for module in pipeline.modules:
        for name in module.schema.list_tables():
            module.schema.get_table(name).to_dicts(limit=1)
    for late in ("late0", "late1"):  # declared after the grants, by the superuser and the admin
        table = conn.adapter.make_full_table_name(f"{prefix}analysis", late)
        conn.query(f"SELECT * FROM {table}").fetchall()

def insert(module):
    module.schema.get_table("scratch").insert1((I,))

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

def command(*args):
    assert cli.main(pipeline, list(args)) == 0, "refused"

def declare_development_set():  # in a process of its own: the schemas here are bound
    done = subprocess.run([sys.executable, "-m", "acl", "declare"], capture_output=True, text=True,
                          env={**os.environ, "ACL_SCHEMA_PREFIX": "dev_" + prefix})
    print(done.stdout + done.stderr, file=sys.stderr)
    assert done.returncode == 0, done.stderr[-300:]

def drop():
    analysis.schema.get_table(f"disposable{I}").drop_quick()

def fetch_other():
    table = conn.adapter.make_full_table_name(f"{other}subject", "subject")
    conn.query(f"SELECT * FROM {table}").fetchall()

attempt("fetch from every schema", fetch)
attempt("insert into an acquisition schema", lambda: insert(subject))
attempt("insert into a processing schema", lambda: insert(session))
attempt("insert into an analysis schema", lambda: insert(analysis))
attempt("populate a processing schema", lambda: populate(session.Session, {"subject_id": 2000 + I}))
attempt("populate an analysis schema", lambda: populate(analysis.MultiModalAnalysis, {"subject_id": 3000 + I}))
attempt("delete upstream, cascading downstream", delete_cascade)
attempt("declare a table in a production schema", lambda: declare(f"{prefix}analysis"))
attempt("drop a production table", drop)
attempt("grant access to someone else",
        lambda: command("access", "grant", newcomer, "viewer", "--apply", "--password-env", "NEW_PASSWORD"))
attempt("fetch from another project's schemas", fetch_other)
attempt("declare a table in another project's schemas", lambda: declare(f"{other}analysis"))
attempt("declare the pipeline in the development set",
        declare_development_set)
print(json.dumps(results))
"""

FETCH = """
import sys
import datajoint as dj
conn = dj.conn()
conn.query("SELECT * FROM " + conn.adapter.make_full_table_name(sys.argv[1], "subject")).fetchall()
"""


def server(backend: str, query: str) -> list[str]:
    """Rows of a query run as the administrator by the server's own command-line client."""
    if backend == "postgresql":
        client = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-AtX"]
        command = [*client, "-v", "ON_ERROR_STOP=1", "-c", query]
    else:
        client = shutil.which("mariadb") or "mysql"
        command = [client, "-h", "127.0.0.1", "-uroot", "--batch", "--raw", "-N", "-e", query]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def accounts(backend: str, tag: str) -> set[str]:
    """The accounts (MariaDB) or roles (PostgreSQL) whose names hold `tag`."""
    if backend == "postgresql":
        return set(
            server(backend, f"SELECT rolname FROM pg_roles WHERE strpos(rolname, '{tag}') > 0")
        )
    return set(
        server(backend, f"SELECT User FROM mysql.global_priv WHERE LOCATE('{tag}', User) > 0")
    )


def drop_everything(backend: str, tag: str, run=server) -> None:
    """Drop the schemas and accounts of one test run (all their names hold `tag`); `run`
    runs a query as the server's administrator."""
    if backend == "postgresql":
        phases = [
            f"SELECT format('DROP SCHEMA %I CASCADE;', nspname) FROM pg_namespace WHERE strpos(nspname, '{tag}') > 0",
            f"SELECT format('DROP OWNED BY %I;', rolname) FROM pg_roles WHERE strpos(rolname, '{tag}') > 0",
            f"SELECT format('DROP ROLE %I;', rolname) FROM pg_roles WHERE strpos(rolname, '{tag}') > 0",
        ]
    else:
        phases = [
            (
                "SELECT CONCAT('DROP DATABASE `', REPLACE(SCHEMA_NAME, '`', '``'), '`;') FROM "
                f"information_schema.SCHEMATA WHERE LOCATE('{tag}', SCHEMA_NAME) > 0"
            ),
            (
                "SELECT CONCAT('DROP USER ', QUOTE(User), '@', QUOTE(Host), ';') FROM "
                f"mysql.global_priv WHERE LOCATE('{tag}', User) > 0"
            ),
        ]
    for phase in phases:  # the server quotes the names itself
        statements = run(backend, phase)
        if statements and backend == "postgresql":  # in turn with `access` (its ADVISORY_LOCK)
            statements.insert(0, "SELECT pg_advisory_xact_lock(1145717059);")
        if statements:
            run(
                backend,
                "\n".join(["SET FOREIGN_KEY_CHECKS = 0;"] * (backend == "mariadb") + statements),
            )


def documented_matrix(project: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """The role table of the generated docs/access.md, and operation -> role -> cell."""
    text = (project / "docs" / "access.md").read_text()
    table = text.split("<!-- access-matrix:start -->\n")[1].split("<!-- access-matrix:end -->")[0]
    lines = [line for line in table.strip().splitlines() if not line.startswith("|--")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[1:] == ROLES
    matrix = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        matrix[cells[0]] = dict(zip(ROLES, cells[1:], strict=True))
    return table, matrix


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


class Session:
    """Runs the generated project's code as one database account; keeps every output."""

    def __init__(self, project: Path, python: str, outputs: list[str]):
        self.project, self.python, self.outputs = project, python, outputs

    def run(self, args: list[str], env: dict, *, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [self.python, *args],
            cwd=self.project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def grant(self, user: str, role: str, env: dict, *extra: str, check: bool = True):
        args = ["-m", PACKAGE, "access", "grant", user, role, "--apply"]
        return self.run([*args, "--password-env", "NEW_PASSWORD", *extra], env, check=check)


def server_log_size() -> dict[Path, int]:
    return {log: log.stat().st_size for log in POSTGRES_LOG.glob("postgresql-*.log")}


def server_log_since(sizes: dict[Path, int]) -> str:
    text = ""
    for log in server_log_size():
        with log.open("rb") as file:
            file.seek(sizes.get(log, 0))
            text += file.read().decode("utf-8", "replace")
    return text


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_every_role_can_do_exactly_what_the_role_table_says(acl_project, project_env, backend):
    python = str(project_env / "bin" / "python")
    tag = secrets.token_hex(3)
    prefix, other = f"acl_{tag}_", f"acl_{tag}_x_"  # another project whose prefix starts with ours
    password = f"Pw-{HOSTILE}-{secrets.token_hex(4)}"
    superuser = clean_environment(
        **BACKENDS[backend],
        ACL_SCHEMA_PREFIX=prefix,
        NEW_PASSWORD=password,
        DJ_LOG_LEVEL="DEBUG",  # DataJoint's query log must not hold the password either
        PGOPTIONS="-c log_statement=all",  # nor the server's, on PostgreSQL
    )
    users = {role: f"{role}_{tag}_{HOSTILE}" for role in ROLES}
    newcomers = [f"new{index}_{tag}_{HOSTILE}" for index in range(len(ROLES))]
    half = f"pg_half_{tag}" if backend == "postgresql" else f"half_{tag}_{HOSTILE}"
    outputs: list[str] = []
    session = Session(acl_project, python, outputs)
    log_sizes = server_log_size() if backend == "postgresql" else {}

    def as_user(role: str) -> dict:
        env = {**superuser, "DJ_USER": users[role], "DJ_PASS": password}
        del env["PGOPTIONS"]  # only a superuser may set log_statement
        return env

    try:
        table, matrix = documented_matrix(acl_project)
        done = session.run(["-c", SETUP, "full"], superuser)
        assert table == json.loads(done.stdout.strip().splitlines()[-1])  # as the package does
        session.run(["-c", SETUP, "bare"], {**superuser, "ACL_SCHEMA_PREFIX": other})

        # A failing apply changes nothing: on PostgreSQL `pg_` names are refused by the
        # server after the role set-up has run, in the same transaction.
        if backend == "postgresql":
            failed = session.grant(half, "viewer", superuser, check=False)
            assert failed.returncode == 1, failed.stderr
            assert "nothing was changed" in failed.stderr
            assert not accounts(backend, tag)

        session.grant(users["admin"], "admin", superuser)
        session.grant(users["viewer"], "operator", {**superuser, "NEW_PASSWORD": "first-" + tag})
        for role in ("viewer", "operator", "developer"):  # the viewer demoted, new password
            session.grant(users[role], role, superuser)
        session.grant(users["analyst"], "analyst", as_user("admin"))  # the admin onboards
        again = session.grant(users["analyst"], "analyst", as_user("admin"))
        if backend == "mariadb":  # exact and idempotent: only the password is set again
            assert again.stdout.count(";") == 1, again.stdout

        # The admin of one project is nobody in another: refused while planning.
        refused = session.grant(half, "viewer", as_user("admin"), "--prefix", other, check=False)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith("error: "), refused.stderr
        assert "needs EXECUTE" in refused.stderr and "Traceback" not in refused.stderr
        # On MariaDB a step fails after the account was created (a schema the procedures do
        # not know yet: access.toml changed, not installed again): the account goes again.
        if backend == "mariadb":
            known = f"`{prefix}_access`.schemas"
            escaped = prefix.replace("_", "\\\\_")  # a pattern, in a string literal
            mariadb_root(f"DELETE FROM {known} WHERE pattern = '{escaped}analysis'")
            failed = session.grant(half, "analyst", as_user("admin"), check=False)
            mariadb_root(
                f"INSERT INTO {known} SELECT '{escaped}analysis', allowed FROM {known} "
                f"WHERE pattern = '{escaped}subject'"
            )
            assert failed.returncode == 1, failed.stderr
            assert "nothing was changed" in failed.stderr
        assert half not in accounts(backend, tag)

        # Tables declared after the grants, by the superuser and by the admin.
        quote = '"' if backend == "postgresql" else "`"  # the names are plain: prefix and tag
        server(
            backend, f"CREATE TABLE {quote}{prefix}analysis{quote}.late0 (late_id int PRIMARY KEY)"
        )
        session.run(["-c", LATE], as_user("admin"))

        mismatches = []
        for index, role in enumerate(ROLES):
            probe = session.run(
                ["-c", PROBE, str(index), prefix, other, newcomers[index]], as_user(role)
            )
            results = json.loads(probe.stdout.strip().splitlines()[-1])
            for operation, cells in matrix.items():
                if results[operation] != expected(cells[role], backend):
                    reason = results.get(operation + " error", "allowed")
                    mismatches.append(f"{role}: {operation}: got {results[operation]} ({reason})")
        assert not mismatches, "\n".join(mismatches)
        assert accounts(backend, tag) & set(newcomers) == {newcomers[ROLES.index("admin")]}

        # Offboarding by the admin: the analyst can no longer read anything.
        revoked = session.run(
            ["-m", PACKAGE, "access", "revoke", users["analyst"], "--apply"], as_user("admin")
        )
        assert "revoke" in revoked.stdout.lower()
        refused = session.run(["-c", FETCH, prefix + "subject"], as_user("analyst"), check=False)
        assert refused.returncode != 0
        assert "denied" in refused.stderr
        if backend == "postgresql":
            stored = server(
                backend,
                f"SELECT rolpassword FROM pg_authid WHERE strpos(rolname, '{tag}') > 0 AND rolcanlogin",
            )
            assert stored and all(value.startswith("SCRAM-SHA-256$4096:") for value in stored)
            if log_sizes:  # the server logged every statement of the grants: no clear text
                log = server_log_since(log_sizes)
                assert "CREATE ROLE" in log
                assert password not in log
        for output in outputs:
            assert password not in output
    finally:
        drop_everything(backend, tag)


POLICIES = """
import contextlib, io, json, sys
from acl import pipeline
from acl.toolkit import cli
policies = {}
for role in sys.argv[1:]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(pipeline, ["access", "policy", role, "--bucket", "lab-data",
                                   "--location", "acl"]) == 0
    policies[role] = json.loads(out.getvalue())
print(json.dumps(policies))
"""


def test_bucket_policies_follow_the_iam_grammar(acl_project, project_env):
    python = str(project_env / "bin" / "python")
    env = clean_environment(ACL_SCHEMA_PREFIX="acl_")  # production: the default is development
    done = subprocess.run(  # `access policy` of every role, in one process
        [python, "-c", POLICIES, *ROLES],
        cwd=acl_project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    policies = json.loads(done.stdout.strip().splitlines()[-1])
    for role in ROLES:
        policy = policies[role]
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


# ---------------------------------------------------------------------------- least privilege
#: What an admin of the project tries, logged in with its password: every statement must be
#: refused by the server. `{a}` is the schema of the access routines, `{victim}` an account
#: of the server that the project did not make (server-wide rights), `{shared}` an account
#: the project made that was then given rights elsewhere, `{admin}` the admin itself.
MARIADB_TAKEOVERS = {
    "alter another account's password": "ALTER USER '{victim}'@'%' IDENTIFIED BY 'taken'",
    "set another account's password": "SET PASSWORD FOR '{victim}'@'%' = PASSWORD('taken')",
    "change its password by the procedure": "CALL {a}.set_password('{victim}', '{hash}')",
    "change a shared account's password": "CALL {a}.set_password('{shared}', '{hash}')",
    "grant itself SUPER": "GRANT SUPER ON *.* TO '{admin}'@'%'",
    "grant itself ALL ON *.*": "GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%'",
    "grant itself a wildcard": "CALL {a}.grant_privileges('{admin}', '%', 'SELECT')",
    "grant itself mysql": "CALL {a}.grant_privileges('{admin}', 'mysql', 'SELECT')",
    "grant itself the register": "CALL {a}.grant_privileges('{admin}', '{a_pattern}', 'INSERT')",
    "create an unrelated account": "CREATE USER 'evil{tag}'@'%' IDENTIFIED BY 'x'",
    "create a superuser by GRANT": "GRANT ALL ON *.* TO 'evil{tag}'@'%' IDENTIFIED BY 'x'",
    "register another account": "INSERT INTO {a}.accounts VALUES ('{victim}')",
    "replace the checks": "CREATE OR REPLACE FUNCTION {a}.refusal(p VARCHAR(128)) "
    "RETURNS VARCHAR(100) RETURN NULL",
    "read another project": "SELECT * FROM `{other}subject`.subject",
    "read the server's accounts": "SELECT * FROM mysql.global_priv",
    "drop an account the project did not make": "DROP USER '{victim}'@'%'",
    "drop it by the procedure": "CALL {a}.drop_account('{victim}')",
    "give project data to another account": "GRANT SELECT ON `{prefix}subject`.* TO '{victim}'@'%'",
    "run code as another definer": "CREATE DEFINER = 'root'@'localhost' PROCEDURE "
    "`{prefix}subject`.p() SELECT 1",
}
POSTGRES_TAKEOVERS = {
    "alter another role's password": "ALTER ROLE {victim} PASSWORD 'taken'",
    "change its password by the function": "SELECT {a}.set_password('{victim}', 'taken')",
    "change a shared role's password": "SELECT {a}.set_password('{shared}', 'taken')",
    "grant itself pg_execute_server_program": "GRANT pg_execute_server_program TO {admin}",
    "grant itself pg_read_server_files": "GRANT pg_read_server_files TO {admin}",
    "grant it by the function": "SELECT {a}.grant_access('{admin}', 'pg_execute_server_program')",
    "grant pg_read_server_files by the function": "SELECT {a}.grant_access('{admin}', "
    "'pg_read_server_files')",
    "run a server program": "COPY (SELECT 1) TO PROGRAM 'true'",
    "make itself CREATEROLE": "ALTER ROLE {admin} CREATEROLE",
    "create an unrelated superuser": "CREATE ROLE evil{tag} SUPERUSER LOGIN PASSWORD 'x'",
    "create an unrelated role": "CREATE ROLE evil{tag} LOGIN PASSWORD 'x'",
    "take another role's name": "SELECT {a}.create_login('{victim}', 'taken')",
    "register another role": "INSERT INTO {a}.accounts SELECT oid FROM pg_roles "
    "WHERE rolname = '{victim}'",
    "replace the checks": "CREATE OR REPLACE FUNCTION {a}.refusal(text) RETURNS text "
    "LANGUAGE sql AS 'SELECT NULL'",
    "read another project": 'SELECT * FROM "{other}subject".subject',
    "give a project role to another role": "GRANT {prefix}viewer TO {victim}",
    "drop a role the project did not make": "DROP ROLE {victim}",
    "drop it by the function": "SELECT {a}.drop_login('{victim}')",
}

#: How the servers refuse: a missing privilege, or the access routines' own checks.
REFUSED = re.compile(r"denied|refused|must (be superuser|have admin option)|Access denied")


def login(backend: str, env: dict, user: str, password: str, sql: str, database: str = ""):
    """Run one statement with the server's own client, logged in as `user` with a password."""
    if backend == "postgresql":
        command = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-h", env["DJ_HOST"],
                   "-p", env["DJ_PORT"], "-U", user, "-d", database or "postgres",
                   "-c", f"BEGIN; {sql}; COMMIT"]  # fmt: skip
        secret = {"PGPASSWORD": password}
    else:
        command = ["mariadb", "-h", env["DJ_HOST"], "-P", env["DJ_PORT"], "-u", user, "-N",
                   "-B", "-e", sql]  # fmt: skip
        secret = {"MYSQL_PWD": password}
    return subprocess.run(
        command, env={**clean_environment(), **secret}, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_the_admin_manages_the_projects_accounts_and_nothing_else(
    acl_project, project_env, backend, request
):
    """The admin made by `access grant --apply` tries to take the server over, and cannot;
    it still onboards, offboards and drops the project's own accounts."""
    python = str(project_env / "bin" / "python")
    tag = secrets.token_hex(3)
    prefix, other = f"tko_{tag}_", f"tko_{tag}_x_"
    password = f"Pw'{tag}\"$$"  # ASCII: the servers' own clients log in with it too
    if backend == "postgresql":  # a scram cluster of the tests' own: passwords for all
        admin_env = request.getfixturevalue("scram_postgres").admin_env

        def run(backend_: str, query: str, database: str = "") -> list[str]:
            return scram_psql(admin_env, query, database or None).splitlines()
    else:
        admin_env = BACKENDS["mariadb"]

        def run(backend_: str, query: str, database: str = "") -> list[str]:
            return mariadb_root(query).splitlines()

    superuser = clean_environment(**admin_env, ACL_SCHEMA_PREFIX=prefix, NEW_PASSWORD=password)
    admin, victim, shared = f"adm_{tag}", f"victim_{tag}", f"shared_{tag}"
    newbie = f"new_{tag}"
    schema = f"{prefix}_access"
    outputs: list[str] = []
    session = Session(acl_project, python, outputs)
    as_admin = {**superuser, "DJ_USER": admin, "DJ_PASS": password}
    victim_db = f"victimdb_{tag}"
    try:
        session.run(["-c", SETUP, "bare"], superuser)
        session.run(["-c", SETUP, "bare"], {**superuser, "ACL_SCHEMA_PREFIX": other})
        session.grant(admin, "admin", superuser)
        # What former versions gave an admin: the server administrator's next grant takes it.
        if backend == "postgresql":
            run(backend, f"ALTER ROLE {admin} CREATEROLE")
            run(backend, f"GRANT {prefix}viewer TO {prefix}admin WITH ADMIN OPTION")
        else:
            for what, on in [("ALL PRIVILEGES", f"`tko\\_{tag}\\_subject`.*"),
                             ("CREATE USER", "*.*"), ("SELECT", "mysql.db"),
                             ("SELECT (User, Host)", "mysql.global_priv")]:  # fmt: skip
                run(backend, f"GRANT {what} ON {on} TO '{admin}'@'%' WITH GRANT OPTION")
        session.grant(admin, "admin", superuser)
        session.grant(shared, "viewer", superuser)
        if backend == "postgresql":
            run(backend, f"CREATE ROLE {victim} LOGIN CREATEROLE CREATEDB PASSWORD 'v'")
            run(backend, f"CREATE DATABASE {victim_db} OWNER {victim}")
            run(backend, "CREATE TABLE secret (a int); INSERT INTO secret VALUES (1)", victim_db)
            run(backend, f'GRANT USAGE ON SCHEMA "{other}subject" TO {shared}')
            run(backend, f'GRANT SELECT ON "{other}subject".subject TO {shared}')
            takeovers = dict(POSTGRES_TAKEOVERS)
            a = f'"{schema}"'
        else:
            run(backend, f"CREATE USER '{victim}'@'%' IDENTIFIED BY 'v'")
            run(backend, f"GRANT ALL PRIVILEGES ON *.* TO '{victim}'@'%' WITH GRANT OPTION")
            run(backend, f"GRANT SELECT ON `{other}subject`.* TO '{shared}'@'%'")
            takeovers = dict(MARIADB_TAKEOVERS)
            a = f"`{schema}`"
        names = {"a": a, "victim": victim, "shared": shared, "admin": admin, "tag": tag,
                 "prefix": prefix, "other": other, "hash": "*" + "0" * 40,
                 "a_pattern": schema.replace("_", "\\\\_")}  # fmt: skip
        allowed = {}
        for what, sql in takeovers.items():
            done = login(backend, admin_env, admin, password, sql.format(**names))
            if done.returncode == 0 or not REFUSED.search(done.stderr):  # not a syntax error
                allowed[what] = f"{sql.format(**names)}: {done.stderr}"
        if backend == "postgresql":  # another database: a member of PUBLIC may connect
            done = login(backend, admin_env, admin, password, "SELECT * FROM secret", victim_db)
            if done.returncode == 0 or not REFUSED.search(done.stderr):
                allowed["read another database"] = done.stdout + done.stderr
        assert not allowed, allowed
        # The accounts the admin went for are as they were.
        assert login(backend, admin_env, victim, "v", "SELECT 1").returncode == 0
        assert login(backend, admin_env, shared, password, "SELECT 1").returncode == 0
        made = {
            "postgresql": f"SELECT 1 FROM pg_roles WHERE rolname = 'evil{tag}'",
            "mariadb": f"SELECT 1 FROM mysql.global_priv WHERE User = 'evil{tag}'",
        }
        assert not run(backend, made[backend])

        # Through the project's commands, the same refusals in one line each.
        for user in (victim, shared):
            refused = session.grant(user, "viewer", as_admin, check=False)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            last = refused.stderr.strip().splitlines()[-1]
            assert last.startswith(f"error: refusing to change '{user}'"), refused.stderr
        # What the admin is for: onboard, demote, offboard and drop the project's accounts.
        session.grant(newbie, "operator", as_admin)
        session.grant(newbie, "analyst", as_admin)
        assert login(backend, admin_env, newbie, password, "SELECT 1").returncode == 0
        # Without the admin role, `access grant` (printing only) names the right it lacks.
        as_newbie = {**superuser, "DJ_USER": newbie, "DJ_PASS": password}
        refused = session.run(["-m", PACKAGE, "access", "grant", "x", "viewer"], as_newbie,
                              check=False)  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "needs EXECUTE" in last, refused.stderr
        session.run(["-m", PACKAGE, "access", "revoke", newbie, "--apply"], as_admin)
        drop = "drop_login" if backend == "postgresql" else "drop_account"
        verb = "SELECT" if backend == "postgresql" else "CALL"
        done = login(backend, admin_env, admin, password, f"{verb} {a}.{drop}('{newbie}')")
        assert done.returncode == 0, done.stderr
        assert login(backend, admin_env, newbie, password, "SELECT 1").returncode != 0
        for output in outputs:
            assert password not in output
        if backend == "mariadb":  # a wildcard grant that covers the register: no install
            run(backend, f"CREATE USER 'wild_{tag}'@'%'")
            run(backend, f"GRANT INSERT ON `tko\\_{tag}\\_%`.* TO 'wild_{tag}'@'%'")
            refused = session.run(["-m", PACKAGE, "access", "grant", newbie, "viewer"], superuser,
                                  check=False)  # fmt: skip
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert "could rewrite the register" in refused.stderr.strip().splitlines()[-1]
    finally:
        if backend == "postgresql":
            run(backend, f"DROP DATABASE IF EXISTS {victim_db}")
        drop_everything(backend, tag, lambda backend_, query: run(backend_, query))
