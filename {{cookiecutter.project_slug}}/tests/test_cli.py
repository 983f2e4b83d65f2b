"""The command line: names, login, argument errors, and a database that cannot be used."""

import os
import secrets
import socket
import stat
import subprocess
import sys

import datajoint as dj
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


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(argv, **settings):
    """A command in its own process, with only `settings` for DataJoint (no DJ_* inherited)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJ_")}
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env=env | settings,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line(done, *words):
    """Exit 2, and one `error:` line holding every word (nothing else but the line
    that names the schema set)."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("schemas: ")]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert all(word in lines[0] for word in words), lines[0]


PACKAGE = "{{ cookiecutter.package_name }}"
COMMANDS = {
    "status": [PACKAGE, "status"],
    "declare": [PACKAGE, "declare"],
    "jobs": [PACKAGE, "jobs"],
    "watch": [PACKAGE, "watch", "--once"],
    "worker": [f"{PACKAGE}.worker"],
}


@pytest.mark.parametrize("command", ["status", "declare", "jobs", "watch"])
def test_a_database_where_nothing_listens_is_one_line(command):
    """(The worker tries a connection that is refused again for a while: a server that is
    restarting; see its own tests.)"""
    port = free_port()  # closed again: nothing listens there
    done = run(
        COMMANDS[command],
        DJ_HOST="127.0.0.1",
        DJ_PORT=str(port),
        DJ_USER="lab",
        DJ_PASS="secret",
        ALERTS_URLS=f"json://127.0.0.1:{free_port()}/",  # watch gets as far as the database
    )
    assert_one_line(done, f"127.0.0.1:{port}", "lab", "refused")
    assert "secret" not in done.stderr


@pytest.mark.parametrize("command", ["status", "worker"])
def test_the_servers_refusal_is_one_line_in_its_own_words(database, command):
    """A user the server does not know: refused by MariaDB, PostgreSQL and the embedded one."""
    config = dj.config.database
    user = f"nobody_{secrets.token_hex(3)}"
    settings = {
        "DJ_HOST": str(config.host),
        "DJ_PORT": str(config.port),
        "DJ_BACKEND": str(config.backend),
        "DJ_USER": user,
        "DJ_PASS": "not-the-password",
    }
    if config.name:
        settings["DJ_DATABASE_NAME"] = config.name
    done = run(COMMANDS[command], **settings)
    assert_one_line(done, f"{config.host}:{config.port}", user)
    reason = done.stderr.rpartition(f"as {user}: ")[2]
    assert any(word in reason for word in ("Access denied", "does not exist", "password")), reason


@pytest.mark.parametrize("command", ["status", "serve"])
def test_nothing_configured_names_dev_db_and_login(project_dir, command):
    done = run([PACKAGE, command])
    assert_one_line(done, f"python -m {PACKAGE} dev-db start", f"python -m {PACKAGE} login")
