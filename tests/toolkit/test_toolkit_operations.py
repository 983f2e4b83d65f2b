"""Operating the pipeline: the schema set in force, check, status, jobs and reset."""

import json
import os
import secrets
import subprocess
import sys

import datajoint as dj
import pytest

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


def test_nothing_configured_means_the_development_set(project, tmp_path, monkeypatch):
    lab = project.pipeline
    (tmp_path / ".git").mkdir()  # no datajoint.json or .env above this folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(lab.prefix_variable, raising=False)
    assert lab.schema_prefix() == lab.development_prefix
    assert lab.prefix_kind() == "development"
    (tmp_path / ".env").write_text(f"{lab.prefix_variable}={lab.production_prefix}\n")
    assert lab.prefix_kind() == "production"  # production only when named
    assert lab.prefix_kind("alice_" + lab.production_prefix) == "personal"


def test_every_command_names_its_schema_set(project, monkeypatch, capsys):
    lab, cli, operations = project.pipeline, project.tk.cli, project.tk.operations
    monkeypatch.setenv(lab.prefix_variable, lab.production_prefix)
    assert cli.main(lab, ["names"]) == 0
    assert capsys.readouterr().err == f"schemas: {lab.production_prefix}* (production)\n"
    operations.announce(writes=True)
    assert "WRITES TO PRODUCTION" in capsys.readouterr().err
    monkeypatch.setenv(lab.prefix_variable, lab.development_prefix)
    operations.announce(writes=True)
    assert capsys.readouterr().err == f"schemas: {lab.development_prefix}* (development)\n"


def test_check_finds_no_drift_after_declare(project, pipeline, capsys):
    assert project.tk.cli.main(pipeline, ["check"]) == 0
    assert "match the code" in capsys.readouterr().out


def test_check_reports_a_definition_changed_in_code(project, pipeline, monkeypatch, capsys):
    operations, drift = project.tk.operations, project.tk.drift
    table = operations.all_tables()[-1]
    definition = table.definition.rstrip()
    if "---" not in definition:
        definition += "\n    ---"
    monkeypatch.setattr(table, "definition", definition + "\n    added_in_code = null : int32\n")
    report = drift.check()
    assert [d.table for d in report] == [operations.label(table)]
    assert report[0].problems[0].startswith("attribute added_in_code is in code only")
    assert project.tk.cli.main(pipeline, ["check"]) == 1
    out = capsys.readouterr().out
    assert "added_in_code" in out
    assert "Table.alter()" in out


def test_status_covers_every_table_in_order(project, pipeline, capsys):
    operations = project.tk.operations
    assert project.tk.cli.main(pipeline, ["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    sampled = {operations.label(table) for step in project.sample_data for table in step}
    labels = [operations.label(table) for table in operations.all_tables()]
    assert [row["table"] for row in report] == labels
    for row in report:
        assert row["declared"]
        if row["tier"] in ("Imported", "Computed"):
            assert (row["remaining"], row["errors"], row["reserved"]) == (0, 0, 0)
            assert row["done"] == row["total"] > 0
            assert row["waiting_on_manual_input"] == 0
        elif row["table"] in sampled:
            assert row["rows"] > 0
    assert project.tk.cli.main(pipeline, ["status"]) == 0
    assert report[0]["table"] in capsys.readouterr().out


def test_status_columns_line_up_whatever_the_names(projects):
    operations = projects["starter"].tk.operations
    long = "a_long_schema_name.AMasterTableWithALongName.AndItsPartTable"
    report = [
        {"table": "s.A", "tier": "Manual", "declared": True, "rows": 3},
        {"table": long, "tier": "Part", "declared": True, "rows": 1234567},
        {"table": "s.B", "tier": "Computed", "declared": True, "rows": 2, "done": 2,
         "remaining": 10, "total": 12, "reserved": 1, "errors": 1, "waiting_on_manual_input": 0,
         "latest_errors": [{"key": {"a_id": 1}, "message": "instrument file missing"}]},
        {"table": "s.C", "tier": "Imported", "declared": False},
    ]  # fmt: skip
    lines = operations.format_status(report).splitlines()
    header = lines[0]
    assert lines[2].startswith(long + "  Part")
    rows_end = header.index("rows") + len("rows")
    assert [line[:rows_end].rstrip()[-1] for line in lines[1:4]] == ["3", "7", "2"]
    assert lines[3].endswith(" " * (len("waiting") - 1) + "0")
    assert len(lines[3]) == len(header)
    assert lines[4] == "    {'a_id': 1}: instrument file missing"
    assert lines[5].split() == ["s.C", "Imported", "not", "declared"]


@pytest.fixture
def failed_job(pipeline, monkeypatch):
    """One key of an auto-populated table, failed by its make().

    The table is one nothing depends on but its Part tables, so deleting the key deletes
    nothing else (a merge table's Part may point to any other).
    """
    tables = pipeline.auto_tables()
    table = next(
        (t for t in reversed(tables) if set(t().children()) <= set(t().parts())), tables[-1]
    )
    key = table.proj().to_dicts(limit=1)[0]
    (table & key).delete(prompt=False)

    def fail(self, key):
        raise RuntimeError("instrument file missing")

    with monkeypatch.context() as patch:
        patch.setattr(table, "make", fail)
        result = table.populate(key, reserve_jobs=True, suppress_errors=True)
    assert len(result["error_list"]) == 1
    yield table, key
    table.jobs.errors.delete_quick()
    table.populate(reserve_jobs=True)
    assert table().progress()[0] == 0


def test_jobs_lists_retries_and_clears_errors(project, pipeline, failed_job, capsys):
    cli, operations = project.tk.cli, project.tk.operations
    table, key = failed_job
    assert cli.main(pipeline, ["jobs", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["table"] == operations.label(table)
    assert row["status"] == "error"
    assert row["key"] == {name: key[name] for name in table.jobs.primary_key}
    assert "instrument file missing" in row["message"]
    assert row["age"] >= 0
    assert row["pid"] == os.getpid()
    assert cli.main(pipeline, ["status"]) == 1  # a job in error
    assert cli.main(pipeline, ["status", "--release-orphans", "3600"]) == 0  # not its business
    capsys.readouterr()

    assert cli.main(pipeline, ["jobs", "retry", "--match", "no such message"]) == 0
    assert "0 failed job(s)" in capsys.readouterr().out
    argv = ["jobs", "retry", "--table", table.__name__, "--match", "instrument"]
    assert cli.main(pipeline, argv) == 0
    assert "1 failed job(s) back to pending" in capsys.readouterr().out
    assert len(table.jobs.errors) == 0
    assert len(table.jobs.pending & key) == 1
    table.populate(reserve_jobs=True)  # the cause is fixed: the key is made
    assert table().progress()[0] == 0
    assert cli.main(pipeline, ["status"]) == 0


def test_jobs_clear_removes_errors(project, pipeline, failed_job, capsys):
    cli = project.tk.cli
    table, _ = failed_job
    assert cli.main(pipeline, ["jobs", "clear", "--key", "no_such_attribute=1"]) == 0
    assert len(table.jobs.errors) == 1
    assert cli.main(pipeline, ["jobs", "clear"]) == 0
    assert "1 failed job(s) cleared" in capsys.readouterr().out
    assert len(table.jobs.errors) == 0


def test_jobs_refuse_bad_input(project, pipeline, capsys):
    cli = project.tk.cli
    assert cli.main(pipeline, ["jobs", "--table", "NoSuchTable"]) == 2
    assert "no auto-populated table NoSuchTable" in capsys.readouterr().err
    assert cli.main(pipeline, ["jobs", "retry", "--key", "oops"]) == 2
    assert "attribute=value" in capsys.readouterr().err
    assert cli.main(pipeline, ["jobs", "clear", "--match", "(unclosed"]) == 2
    assert "'(unclosed' is not a regular expression" in capsys.readouterr().err


def count_objects(prefix: str) -> tuple[int, int]:
    """Schemas named with the prefix, and every table in them (jobs tables included)."""
    connection = dj.conn()
    schemas = [name for name in dj.list_schemas() if name.startswith(prefix)]
    tables = sum(
        len(connection.query(connection.adapter.list_tables_sql(name)).fetchall())
        for name in schemas
    )
    return len(schemas), tables


READ_ONLY = ["names", "status", "status --json", "versions", "compare dev_", "check", "jobs"]

SCRIPT = """\
import sys
import {package} as package
from {package}.toolkit import cli, short_name
lab = package.pipeline
if sys.argv[1] == "declare-some":
    for module in lab.modules[:2]:
        module.schema.activate(lab.schema_prefix() + short_name(module))
    if len(lab.modules) > 2:
        connection = lab.modules[0].schema.connection
        name = lab.schema_prefix() + short_name(lab.modules[2])
        connection.query(connection.adapter.create_schema_sql(name))
else:
    codes = [cli.main(lab, command.split()) for command in sys.argv[1:]]
    print(codes)
"""


def test_read_only_commands_create_nothing(project, pipeline, database):
    """Where only some schemas and tables exist, read-only commands add nothing.

    The first two schemas are declared (their jobs tables are not: `declare` makes those),
    the third exists with no table, the others do not exist.
    """
    prefix = f"{pipeline.schema_prefix()}ro{secrets.token_hex(2)}_"
    environment = project.environment(**database.env, **{pipeline.prefix_variable: prefix})
    script = SCRIPT.format(package=project.package)
    subprocess.run([sys.executable, "-c", script, "declare-some"], env=environment,
                   cwd=project.root, check=True, capture_output=True)  # fmt: skip
    operations = project.tk.operations
    try:
        before = count_objects(prefix)
        assert before[0] == min(3, len(pipeline.modules))
        ran = subprocess.run(
            [sys.executable, "-c", script, *READ_ONLY],
            env=environment,
            cwd=project.root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "Traceback" not in ran.stderr, ran.stderr[-3000:]
        assert count_objects(prefix) == before
    finally:
        operations.reset(operations.reset_plan(prefix))
    assert count_objects(prefix) == (0, 0)


def test_reset_drops_a_development_set_and_refuses_production(
    project, database, monkeypatch, capsys
):
    lab, cli = project.pipeline, project.tk.cli
    prefix = lab.throwaway_prefix()
    connection = dj.conn()
    names = [*lab.schema_names(prefix).values(), prefix + "renamed"]
    for name in names:
        connection.query(connection.adapter.create_schema_sql(name))
    monkeypatch.setenv(lab.prefix_variable, prefix)
    monkeypatch.setattr("builtins.input", lambda question: "no")
    assert cli.main(lab, ["reset"]) == 1  # not confirmed
    assert count_objects(prefix)[0] == len(names)
    monkeypatch.setattr("builtins.input", lambda question: prefix)
    assert cli.main(lab, ["reset"]) == 0
    assert count_objects(prefix) == (0, 0)
    assert cli.main(lab, ["reset", "--yes"]) == 0  # nothing left: nothing to do
    for refused in (lab.production_prefix, "", lab.production_prefix[:2]):
        monkeypatch.setenv(lab.prefix_variable, refused)
        capsys.readouterr()
        assert cli.main(lab, ["reset", "--yes"]) == 2
        assert "refusing to reset" in capsys.readouterr().err
