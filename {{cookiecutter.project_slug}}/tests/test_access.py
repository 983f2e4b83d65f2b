"""Access control without a server: the role table, the SQL and the bucket policies."""

import secrets
from pathlib import Path

import datajoint as dj
import pytest

from {{ cookiecutter.package_name }} import PIPELINE, access, promotion, schema_prefix


def test_roles_follow_the_guide():
    policy = access.load_policy()
    assert list(policy["roles"]) == ["viewer", "analyst", "operator", "developer", "admin"]
    viewer = access.privileges("viewer", policy)
    assert set(viewer) == set(PIPELINE)
    assert all(granted == {"SELECT"} for granted in viewer.values())
    analyst = access.privileges("analyst", policy)
    kinds = access.schema_kinds(policy)
    for name, granted in analyst.items():
        if granted & {"INSERT", "UPDATE"}:
            assert kinds[name] == "analysis"  # the analyst writes analysis schemas only
    assert all(granted == {"ALL"} for granted in access.privileges("admin", policy).values())


def test_writers_can_check_foreign_keys_and_cascade_deletes():
    policy = access.load_policy()
    operator = access.privileges("operator", policy)
    for name, parents in PIPELINE.items():
        if "INSERT" in operator[name]:
            assert all("SELECT" in operator[parent] for parent in parents)
    for name, parents in PIPELINE.items():
        if any("DELETE" in operator.get(parent, set()) for parent in parents):
            assert "DELETE" in operator[name]


def test_the_role_table_of_the_docs_follows_access_toml():
    docs = Path(__file__).resolve().parents[1] / "docs" / "access.md"
    text = docs.read_text(encoding="utf-8")
    table = text.split("<!-- access-matrix:start -->\n")[1].split("<!-- access-matrix:end -->")[0]
    expected = access.role_table(access.load_policy())
    assert table == expected, f"update docs/access.md with `access table`:\n{expected}"


def test_mysql_grants_match_this_project_alone():
    policy = access.load_policy()
    for role in policy["roles"]:
        for pattern in access.mysql_desired(role, policy, "my_lab_"):
            # Every `_` and `%` escaped: no wildcard reaches another project's schemas.
            unescaped = pattern.replace("\\\\", "").replace("\\_", "").replace("\\%", "")
            assert "_" not in unescaped, pattern
            assert "%" not in unescaped, pattern


def test_grants_are_exact_and_never_show_the_password(pipeline):
    """A hostile user name, granted twice and demoted; the password never shows."""
    connection = dj.conn()
    missing = access.missing_admin_right(connection)  # a lab's own account has no such right
    if missing:
        pytest.skip(f"creating users needs {missing}, which {dj.config.database.user} lacks")
    promotion.record_versions()  # PostgreSQL grants on every schema of the set
    user = f"o'b\"r$$\\n%s_{secrets.token_hex(3)}"
    password = "pa'ss\"w$$rd\\é%s"
    postgres = connection.adapter.backend == "postgresql"
    try:
        plan = access.plan_access(user, "operator")
        shown = "\n".join(statement.shown() for statement in plan.statements)
        assert password not in shown
        assert "'<password>'" in shown
        access.apply(plan, password)
        access.apply(access.plan_access(user, "viewer"), password + "2")
        again = access.plan_access(user, "viewer")
        if not postgres:  # nothing left to change, but the password
            assert [statement.secret for statement in again.statements] == [True]
            (db_rows,) = connection.query(
                "SELECT COUNT(*) FROM mysql.db WHERE User = %s AND Insert_priv = 'Y'", args=(user,)
            ).fetchall()
            assert db_rows == (0,)  # demoted: no INSERT left anywhere
        else:
            (stored,) = connection.query(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", args=(user,)
            ).fetchone()
            assert stored.startswith("SCRAM-SHA-256$4096:")
            groups = connection.query(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                args=(user,),
            ).fetchall()
            assert groups == [(access.group_role("viewer", schema_prefix()),)]
        access.apply(access.plan_access(user, None), None)
    finally:
        routines = access.access_schema(schema_prefix())  # installed by the first grant
        if postgres:  # sent as they are (no parameters): the names hold `%`
            with connection.transaction:  # in turn with other access changes, like `apply`
                connection.query("SELECT pg_advisory_xact_lock(%s)", args=(access.ADVISORY_LOCK,))
                connection.query(f"DROP ROLE IF EXISTS {quote_pg(user)}", args=None)
                connection.query(f"DROP SCHEMA IF EXISTS {quote_pg(routines)} CASCADE", args=None)
                for role in access.load_policy()["roles"]:
                    group = access.group_role(role, schema_prefix())
                    query = "SELECT 1 FROM pg_roles WHERE rolname = %s"
                    if connection.query(query, args=(group,)).fetchone():
                        connection.query(f"DROP OWNED BY {quote_pg(group)}", args=None)
                        connection.query(f"DROP ROLE {quote_pg(group)}", args=None)
        else:
            connection.query("DROP USER IF EXISTS %s@'%%'", args=(user,))
            connection.query(f"DROP DATABASE IF EXISTS `{routines}`", args=None)


def quote_pg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_bucket_policy_matches_database_rights():
    policy = access.bucket_policy("analyst", "lab-data", "pipeline")
    actions = {action: s["Resource"] for s in policy["Statement"] for action in s["Action"]}
    kinds = access.schema_kinds(access.load_policy())
    analysis = {schema_prefix() + name for name, kind in kinds.items() if kind == "analysis"}
    writes = {"s3:PutObject", "s3:DeleteObject"} if analysis else set()
    assert set(actions) == {"s3:ListBucket", "s3:GetObject"} | writes
    for resource in actions.get("s3:PutObject", []):
        assert resource.split("/")[3] in analysis
    viewer = access.bucket_policy("viewer", "lab-data", "pipeline")
    viewer_actions = {action for s in viewer["Statement"] for action in s["Action"]}
    assert viewer_actions == {"s3:ListBucket", "s3:GetObject"}
{%- if cookiecutter.audit_trail == "yes" %}


def test_audit_trail_names_who_entered_each_row(pipeline):
    from {{ cookiecutter.package_name }}.pipeline.sample_data import SAMPLE_DATA

    table, rows = next(iter(SAMPLE_DATA[0].items()))
    trail = access.audit_trail(table)
    assert len(trail) == len(rows() if callable(rows) else rows)
    for row in trail:
        assert row["provenance"]["agent"]["user"] == dj.config.database.user
        assert row["provenance"]["time"]
{%- endif %}
