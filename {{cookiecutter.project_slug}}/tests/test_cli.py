"""The command line: names, login and argument errors (no database needed)."""

import stat

import pytest

from {{ cookiecutter.package_name }} import DEVELOPMENT_PREFIX, PREFIX_VARIABLE
from {{ cookiecutter.package_name }} import __main__ as cli


def test_names_follow_the_prefix_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PREFIX_VARIABLE, "dev_")
    assert cli.main(["names"]) == 0
    assert "-> dev_" in capsys.readouterr().out
    monkeypatch.delenv(PREFIX_VARIABLE)
    monkeypatch.chdir(tmp_path)  # no .env here: nothing configured
    (tmp_path / ".git").mkdir()
    assert cli.main(["names"]) == 0
    assert f"-> {DEVELOPMENT_PREFIX}" in capsys.readouterr().out  # never production by default


def test_login_writes_credentials_only_the_user_can_read(tmp_path, monkeypatch):
    (tmp_path / "datajoint.json").write_text("{}")
    (tmp_path / ".git").mkdir()  # DataJoint stops looking for datajoint.json here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DJ_PASS", "s3cret")
    assert cli.main(["login", "--user", "alice"]) == 0
    secrets = tmp_path / ".secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name, value in (("database.user", "alice"), ("database.password", "s3cret")):
        assert (secrets / name).read_text() == value
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600


def test_login_outside_a_project_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["login", "--user", "alice"]) == 2
    assert "no datajoint.json" in capsys.readouterr().err
    assert not (tmp_path / ".secrets").exists()


def test_unknown_table_is_refused(capsys):
    assert cli.main(["populate", "NoSuchTable"]) == 2
    assert "no auto-populated table NoSuchTable" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit, match="2"):
        cli.main(["frobnicate"])
