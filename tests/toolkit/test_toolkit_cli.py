"""The command line: names, login, argument errors, and a database that cannot be used."""

import secrets
import stat

import pytest
from conftest import free_port

from .conftest import assert_one_line, run

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


@pytest.fixture(scope="session")
def starter(projects):
    """The starter package, for tests of the command line itself (no pipeline of its own)."""
    return projects["starter"]


def test_names_follow_the_prefix_variable(project, tmp_path, monkeypatch, capsys):
    lab = project.pipeline
    monkeypatch.setenv(lab.prefix_variable, "dev_")
    assert project.tk.cli.main(lab, ["names"]) == 0
    assert "-> dev_" in capsys.readouterr().out
    monkeypatch.delenv(lab.prefix_variable)
    monkeypatch.chdir(tmp_path)  # no .env here: nothing configured
    (tmp_path / ".git").mkdir()
    assert project.tk.cli.main(lab, ["names"]) == 0
    assert f"-> {lab.development_prefix}" in capsys.readouterr().out  # never production


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    """An empty project folder: a datajoint.json, and a .git where DataJoint stops looking."""
    (tmp_path / "datajoint.json").write_text("{}")
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DJ_PASS", raising=False)
    return tmp_path


def test_login_writes_credentials_only_the_user_can_read(starter, project_dir, monkeypatch):
    folder = project_dir / ".secrets"
    folder.mkdir(mode=0o755)
    (folder / "database.password").write_text("old")
    (folder / "database.password").chmod(0o644)
    monkeypatch.setenv("DJ_PASS", "s3cret")
    argv = ["login", "--user", "alice", "--password-from-env"]
    assert starter.tk.cli.main(starter.pipeline, argv) == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name, value in (("database.user", "alice"), ("database.password", "s3cret")):
        assert (folder / name).read_text() == value
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600


def test_login_does_not_store_dj_pass_unasked(starter, project_dir, monkeypatch, capsys):
    monkeypatch.setenv("DJ_PASS", "s3cret")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert starter.tk.cli.main(starter.pipeline, ["login", "--user", "alice"]) == 2
    assert "--password-from-env" in capsys.readouterr().err
    assert not (project_dir / ".secrets").exists()


def test_login_asks_before_storing_dj_pass(starter, project_dir, monkeypatch):
    monkeypatch.setenv("DJ_PASS", "from-env")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: "n")
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert starter.tk.cli.main(starter.pipeline, ["login", "--user", "alice"]) == 0
    assert (project_dir / ".secrets" / "database.password").read_text() == "typed"


@pytest.mark.parametrize("link", [".secrets", ".secrets/database.password"])
def test_login_refuses_to_write_through_a_symlink(
    starter, project_dir, tmp_path_factory, link, capsys
):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    target = elsewhere / "database.password" if link.endswith("password") else elsewhere
    if link.endswith("password"):
        (project_dir / ".secrets").mkdir()
        target.write_text("untouched")
    (project_dir / link).symlink_to(target)
    argv = ["login", "--user", "alice", "--password-from-env"]
    assert starter.tk.cli.main(starter.pipeline, argv) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert sorted(path.name for path in elsewhere.iterdir()) == (
        ["database.password"] if link.endswith("password") else []
    )
    if link.endswith("password"):
        assert target.read_text() == "untouched"


def test_login_outside_a_project_is_refused(starter, tmp_path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    assert starter.tk.cli.main(starter.pipeline, ["login", "--user", "alice"]) == 2
    assert "no datajoint.json" in capsys.readouterr().err
    assert not (tmp_path / ".secrets").exists()


def test_unknown_table_is_refused(project, capsys):
    assert project.tk.cli.main(project.pipeline, ["populate", "NoSuchTable"]) == 2
    assert "unknown NoSuchTable" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(starter):
    with pytest.raises(SystemExit, match="2"):
        starter.tk.cli.main(starter.pipeline, ["frobnicate"])


def commands(package: str) -> dict[str, list[str]]:
    return {
        "status": [package, "status"],
        "declare": [package, "declare"],
        "jobs": [package, "jobs"],
        "watch": [package, "watch", "--once"],
        "worker": [f"{package}.worker"],
        "serve": [package, "serve"],
    }


@pytest.mark.parametrize("command", ["status", "declare", "jobs", "watch"])
def test_a_database_where_nothing_listens_is_one_line(starter, command):
    """(The worker tries a connection that is refused again for a while: a server that is
    restarting; see its own tests.)"""
    port = free_port()  # closed again: nothing listens there
    done = run(
        starter,
        commands(starter.package)[command],
        DJ_HOST="127.0.0.1",
        DJ_PORT=str(port),
        DJ_USER="lab",
        DJ_PASS="secret",
        ALERTS_URLS=f"json://127.0.0.1:{free_port()}/",  # watch gets as far as the database
    )
    assert_one_line(done, f"127.0.0.1:{port}", "lab", "refused")
    assert "secret" not in done.stderr


@pytest.mark.parametrize("command", ["status", "worker"])
def test_the_servers_refusal_is_one_line_in_its_own_words(starter, database, command):
    """A user the server does not know: refused by MariaDB, PostgreSQL and the embedded one."""
    user = f"nobody_{secrets.token_hex(3)}"
    settings = {**database.env, "DJ_USER": user, "DJ_PASS": "not-the-password"}
    done = run(starter, commands(starter.package)[command], **settings)
    assert_one_line(done, f"{settings['DJ_HOST']}:{settings['DJ_PORT']}", user)
    reason = done.stderr.rpartition(f"as {user}: ")[2]
    assert any(word in reason for word in ("Access denied", "does not exist", "password")), reason


@pytest.mark.parametrize("command", ["status", "serve"])
def test_nothing_configured_names_dev_db_and_login(starter, project_dir, command):
    done = run(starter, commands(starter.package)[command], cwd=project_dir)
    package = starter.package
    assert_one_line(done, f"python -m {package} dev-db start", f"python -m {package} login")
