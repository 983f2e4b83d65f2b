"""The dev-db command and hook, without starting a server (the embedded fixture starts one)."""

import os
import subprocess
import sys

import datajoint as dj
import pytest

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


@pytest.fixture(scope="session")
def starter(projects):
    return projects["starter"]


def test_status_says_when_no_server_runs(starter, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    devdb, cli = starter.tk.devdb, starter.tk.cli
    assert devdb.running() is None
    assert cli.main(starter.pipeline, ["dev-db", "status"]) == 1
    assert cli.main(starter.pipeline, ["dev-db", "stop"]) == 0
    assert capsys.readouterr().out.splitlines() == ["dev-db not running", "dev-db was not running"]


def test_a_stale_pid_file_is_no_server(starter, tmp_path):
    devdb = starter.tk.devdb
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = tmp_path / devdb.FOLDER
    folder.mkdir()
    lines = [finished.stdout.strip(), str(folder), "0", "5432", str(folder), "", "0 0", "ready"]
    (folder / "postmaster.pid").write_text("\n".join(lines) + "\n")
    assert devdb.running(folder) is None
    lines[0] = str(os.getpid())  # a live process
    (folder / "postmaster.pid").write_text("\n".join(lines) + "\n")
    assert devdb.running(folder) == devdb.Server(os.getpid(), 5432, folder)


def test_a_configured_user_is_left_alone(starter):
    devdb = starter.tk.devdb
    with dj.config.override(database__user="someone", database__host="db.example.org"):
        assert devdb.use_if_unconfigured() is None
        assert dj.config.database.host == "db.example.org"
