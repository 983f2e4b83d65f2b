"""The worker and the status command, run in-process against the test database."""

import json

import pytest

from {{ cookiecutter.package_name }} import __main__ as cli
from {{ cookiecutter.package_name }} import worker


def test_worker_pass_finds_nothing_left(pipeline):
    assert worker.main(["--once", "--log-level", "WARNING"]) == 0


def test_worker_processes_find_nothing_left(pipeline):
    """--processes 2: children with connections of their own; the caller's works after."""
    assert worker.main(["--once", "--processes", "2", "--log-level", "WARNING"]) == 0
    assert all(table().progress()[0] == 0 for table in pipeline.auto_tables())


def test_worker_refuses_unknown_tables(pipeline, capsys):
    with pytest.raises(SystemExit, match="2"):
        worker.main(["--table", "NoSuchTable"])
    assert "unknown NoSuchTable" in capsys.readouterr().err


def test_status_reports_every_table_in_order(pipeline, capsys):
    assert cli.main(["status", "--json"]) == 0
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
