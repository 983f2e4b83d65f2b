"""Access control without a server: the role table, the SQL and the bucket policies."""

import datajoint as dj

from {{ cookiecutter.package_name }} import PIPELINE, access, schema_prefix


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


def test_sql_never_shows_the_password(monkeypatch):
    for backend in ("mysql", "postgresql"):
        monkeypatch.setitem(dj.config, "database.backend", backend)
        statements = access.grant_statements("alice", "analyst", "lab_")
        shown = "\n".join(statement.shown() for statement in statements)
        assert "'<password>'" in shown
        assert all("%s" not in statement.shown() for statement in statements)
        kinds = access.schema_kinds(access.load_policy())
        assert all(f"lab_{name}" in shown for name, kind in kinds.items() if kind == "analysis")
        assert "WITH GRANT OPTION" not in shown


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
