"""Access control: the role table, the SQL, the bucket policies, and grants on a server."""

import contextlib
import secrets

import datajoint as dj
import pytest

from .conftest import PACKAGE_TEMPLATE, SETTINGS, configure

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)
DOCS = PACKAGE_TEMPLATE.parents[1] / "docs" / "access.md"


@pytest.fixture
def access(project, monkeypatch):
    """The project's access module, run where its access.toml is found."""
    monkeypatch.chdir(project.root)
    return project.tk.access


def test_roles_follow_the_guide(project, access):
    policy = access.load_policy()
    assert list(policy["roles"]) == ["viewer", "analyst", "operator", "developer", "admin"]
    viewer = access.privileges("viewer", policy)
    assert set(viewer) == set(project.pipeline.graph)
    assert all(granted == {"SELECT"} for granted in viewer.values())
    analyst = access.privileges("analyst", policy)
    kinds = access.schema_kinds(policy)
    for name, granted in analyst.items():
        if granted & {"INSERT", "UPDATE"}:
            assert kinds[name] == "analysis"  # the analyst writes analysis schemas only
    assert all(granted == {"ALL"} for granted in access.privileges("admin", policy).values())


def test_writers_can_check_foreign_keys_and_cascade_deletes(project, access):
    policy = access.load_policy()
    operator = access.privileges("operator", policy)
    graph = project.pipeline.graph
    for name, parents in graph.items():
        if "INSERT" in operator[name]:
            assert all("SELECT" in operator[parent] for parent in parents)
    for name, parents in graph.items():
        if any("DELETE" in operator.get(parent, set()) for parent in parents):
            assert "DELETE" in operator[name]


def test_the_role_table_of_the_docs_follows_access_toml(project, access):
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- access-matrix:start -->\n")[1].split("<!-- access-matrix:end -->")[0]
    expected = access.role_table(access.load_policy())
    assert table == expected, f"update docs/access.md with `access table`:\n{expected}"


def test_mysql_grants_match_this_project_alone(access):
    policy = access.load_policy()
    for role in policy["roles"]:
        for pattern in access.mysql_desired(role, policy, "my_lab_"):
            # Every `_` and `%` escaped: no wildcard reaches another project's schemas.
            unescaped = pattern.replace("\\\\", "").replace("\\_", "").replace("\\%", "")
            assert "_" not in unescaped, pattern
            assert "%" not in unescaped, pattern


def quote_pg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_a_lab_account_cannot_set_up_access(project, pipeline, database, access):
    """A lab member's account (MariaDB, the scram PostgreSQL) lacks the administrator's
    right, and says which; the embedded server's superuser has it (the test below)."""
    missing = access.missing_admin_right(dj.conn())
    if database.account is None:
        assert missing is None
    else:
        assert missing, "a lab account should not be able to create users"


@pytest.mark.only(database="embedded")
def test_grants_are_exact_and_never_show_the_password(project, pipeline, access):
    """A hostile user name, granted twice and demoted; the password never shows.

    (Creating users needs an administrator: the embedded server's superuser. The lab
    accounts lack the right: see the test above.)"""
    connection = dj.conn()
    assert access.missing_admin_right(connection) is None
    promotion = project.tk.promotion
    promotion.record_versions()  # PostgreSQL grants on every schema of the set
    prefix = pipeline.schema_prefix()
    user = f"o'b\"r$$\\n%s_{secrets.token_hex(3)}"
    password = "pa'ss\"w$$rd\\é%s"
    try:
        plan = access.plan_access(user, "operator")
        shown = "\n".join(statement.shown() for statement in plan.statements)
        assert password not in shown
        assert "'<password>'" in shown
        access.apply(plan, password)
        access.apply(access.plan_access(user, "viewer"), password + "2")
        (stored,) = connection.query(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", args=(user,)
        ).fetchone()
        assert stored.startswith("SCRAM-SHA-256$4096:")
        groups = connection.query(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            args=(user,),
        ).fetchall()
        assert groups == [(access.group_role("viewer", prefix),)]
        access.apply(access.plan_access(user, None), None)
    finally:
        routines = access.access_schema(prefix)  # installed by the first grant
        with connection.transaction:  # in turn with other access changes, like `apply`
            connection.query("SELECT pg_advisory_xact_lock(%s)", args=(access.ADVISORY_LOCK,))
            connection.query(f"DROP ROLE IF EXISTS {quote_pg(user)}", args=None)
            connection.query(f"DROP SCHEMA IF EXISTS {quote_pg(routines)} CASCADE", args=None)
            for role in access.load_policy()["roles"]:
                group = access.group_role(role, prefix)
                query = "SELECT 1 FROM pg_roles WHERE rolname = %s"
                if connection.query(query, args=(group,)).fetchone():
                    connection.query(f"DROP OWNED BY {quote_pg(group)}", args=None)
                    connection.query(f"DROP ROLE {quote_pg(group)}", args=None)


@contextlib.contextmanager
def administrator(env: dict[str, str]):
    """The server's administrator as DataJoint's connection, for a while (the pipeline's
    schemas keep the lab account's connection); the lab's connection afterwards."""
    from datajoint import instance

    saved = {key: dj.config[key] for key in SETTINGS.values()}
    lab_connection = instance._singleton_connection
    configure(env)
    root = dj.conn(reset=True)
    try:
        yield root
    finally:
        root.close()
        for key, value in saved.items():
            dj.config[key] = value
        instance._singleton_connection = lab_connection


@pytest.mark.only(database="mariadb")
def test_mariadb_grants_are_exact_and_never_show_the_password(pipeline, database, access):
    """The same on MariaDB, by its administrator. Not on the lab account's schema set: the
    account's wildcard grant reaches the access routines' schema there, which is refused;
    a prefix of the administrator's own is granted."""
    assert database.account is not None
    prefix = f"toolkit_{secrets.token_hex(3)}_"
    user = f"o'b\"r$$\\n%s_{secrets.token_hex(3)}"
    password = "pa'ss\"w$$rd\\é%s"
    with administrator(database.account.admin_env) as connection:
        assert access.missing_admin_right(connection) is None
        with pytest.raises(ValueError, match="could rewrite the register"):
            access.plan_access(user, "operator")  # the lab's prefix
        try:
            plan = access.plan_access(user, "operator", prefix)
            shown = "\n".join(statement.shown() for statement in plan.statements)
            assert password not in shown
            assert "'<password>'" in shown
            access.apply(plan, password)
            access.apply(access.plan_access(user, "viewer", prefix), password + "2")
            again = access.plan_access(user, "viewer", prefix)
            assert [statement.secret for statement in again.statements] == [True]  # the password
            (db_rows,) = connection.query(
                "SELECT COUNT(*) FROM mysql.db WHERE User = %s AND Insert_priv = 'Y'", args=(user,)
            ).fetchall()
            assert db_rows == (0,)  # demoted: no INSERT left anywhere
            access.apply(access.plan_access(user, None, prefix), None)
        finally:
            routines = access.access_schema(prefix)  # installed by the first grant
            connection.query("DROP USER IF EXISTS %s@'%%'", args=(user,))
            connection.query(f"DROP DATABASE IF EXISTS `{routines}`", args=None)


def test_bucket_policy_matches_database_rights(project, access):
    policy = access.bucket_policy("analyst", "lab-data", "pipeline")
    actions = {action: s["Resource"] for s in policy["Statement"] for action in s["Action"]}
    kinds = access.schema_kinds(access.load_policy())
    prefix = project.pipeline.schema_prefix()
    analysis = {prefix + name for name, kind in kinds.items() if kind == "analysis"}
    writes = {"s3:PutObject", "s3:DeleteObject"} if analysis else set()
    assert set(actions) == {"s3:ListBucket", "s3:GetObject"} | writes
    for resource in actions.get("s3:PutObject", []):
        assert resource.split("/")[3] in analysis
    viewer = access.bucket_policy("viewer", "lab-data", "pipeline")
    viewer_actions = {action for s in viewer["Statement"] for action in s["Action"]}
    assert viewer_actions == {"s3:ListBucket", "s3:GetObject"}


def test_audit_trail_names_who_entered_each_row(project, pipeline, database, access):
    table, rows = next(iter(project.sample_data[0].items()))
    trail = access.audit_trail(table)
    assert len(trail) == len(rows() if callable(rows) else rows)
    for row in trail:
        assert row["provenance"]["agent"]["user"] == database.env["DJ_USER"]
        assert row["provenance"]["time"]
