"""The dev-db command and hook, without starting a server (the template's tests start one)."""

import os
import subprocess
import sys

import datajoint as dj

from {{ cookiecutter.package_name }} import devdb
from {{ cookiecutter.package_name }}.__main__ import main


def test_status_says_when_no_server_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert devdb.running() is None
    assert main(["dev-db", "status"]) == 1
    assert main(["dev-db", "stop"]) == 0
    assert capsys.readouterr().out.splitlines() == ["dev-db not running", "dev-db was not running"]


def test_a_stale_pid_file_is_no_server(tmp_path):
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


def test_a_configured_user_is_left_alone():
    with dj.config.override(database__user="someone", database__host="db.example.org"):
        assert devdb.use_if_unconfigured() is None
        assert dj.config.database.host == "db.example.org"
