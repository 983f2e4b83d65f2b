"""The worker and the status command, run in-process against the test database."""

import json

import pytest

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


def test_worker_pass_finds_nothing_left(project, pipeline):
    assert project.tk.worker.main(pipeline, ["--once", "--log-level", "WARNING"]) == 0


def test_worker_processes_find_nothing_left(project, pipeline):
    """--processes 2: children with connections of their own; the caller's works after."""
    argv = ["--once", "--processes", "2", "--log-level", "WARNING"]
    assert project.tk.worker.main(pipeline, argv) == 0
    assert all(table().progress()[0] == 0 for table in pipeline.auto_tables())


def test_worker_refuses_unknown_tables(project, capsys):
    with pytest.raises(SystemExit, match="2"):
        project.tk.worker.main(project.pipeline, ["--table", "NoSuchTable"])
    assert "unknown NoSuchTable" in capsys.readouterr().err


def test_status_reports_every_table_in_order(project, pipeline, capsys):
    assert project.tk.cli.main(pipeline, ["status", "--json"]) == 0
    report = [
        row
        for row in json.loads(capsys.readouterr().out)
        if row["tier"] in ("Imported", "Computed")
    ]
    assert [row["table"].split(".")[1] for row in report] == [
        table.__name__ for table in pipeline.auto_tables()
    ]
    for row in report:
        assert (row["remaining"], row["errors"]) == (0, 0)
        assert row["done"] == row["total"] > 0
