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


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    """An empty project folder: a datajoint.json, and a .git where DataJoint stops looking."""
    (tmp_path / "datajoint.json").write_text("{}")
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DJ_PASS", raising=False)
    return tmp_path


def test_login_writes_credentials_only_the_user_can_read(project_dir, monkeypatch):
    secrets = project_dir / ".secrets"
    secrets.mkdir(mode=0o755)
    (secrets / "database.password").write_text("old")
    (secrets / "database.password").chmod(0o644)
    monkeypatch.setenv("DJ_PASS", "s3cret")
    assert cli.main(["login", "--user", "alice", "--password-from-env"]) == 0
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name, value in (("database.user", "alice"), ("database.password", "s3cret")):
        assert (secrets / name).read_text() == value
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600


def test_login_does_not_store_dj_pass_unasked(project_dir, monkeypatch, capsys):
    monkeypatch.setenv("DJ_PASS", "s3cret")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["login", "--user", "alice"]) == 2
    assert "--password-from-env" in capsys.readouterr().err
    assert not (project_dir / ".secrets").exists()


def test_login_asks_before_storing_dj_pass(project_dir, monkeypatch):
    monkeypatch.setenv("DJ_PASS", "from-env")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: "n")
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert cli.main(["login", "--user", "alice"]) == 0
    assert (project_dir / ".secrets" / "database.password").read_text() == "typed"


@pytest.mark.parametrize("link", [".secrets", ".secrets/database.password"])
def test_login_refuses_to_write_through_a_symlink(project_dir, tmp_path_factory, link, capsys):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    target = elsewhere / "database.password" if link.endswith("password") else elsewhere
    if link.endswith("password"):
        (project_dir / ".secrets").mkdir()
        target.write_text("untouched")
    (project_dir / link).symlink_to(target)
    assert cli.main(["login", "--user", "alice", "--password-from-env"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert sorted(path.name for path in elsewhere.iterdir()) == (
        ["database.password"] if link.endswith("password") else []
    )
    if link.endswith("password"):
        assert target.read_text() == "untouched"


def test_login_outside_a_project_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["login", "--user", "alice"]) == 2
    assert "no datajoint.json" in capsys.readouterr().err
    assert not (tmp_path / ".secrets").exists()


def test_unknown_table_is_refused(capsys):
    assert cli.main(["populate", "NoSuchTable"]) == 2
    assert "unknown NoSuchTable" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit, match="2"):
        cli.main(["frobnicate"])
