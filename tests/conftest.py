"""Shared fixtures: the template's hooks as modules, and one environment for generated projects."""

from __future__ import annotations

import ast
import functools
import glob
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]

# The programs the tests start write their .pyc files, as they do on a user's machine:
# with PYTHONDONTWRITEBYTECODE set (CI machines), each Python start would compile DataJoint,
# pandas and the rest again -- about 2 s of CPU per process, hundreds of times.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Settings under which a generated project's tests reach each backend.
BACKENDS = {
    "mariadb": {
        "DJ_HOST": "127.0.0.1",
        "DJ_PORT": "3306",
        "DJ_USER": "root",
        "DJ_PASS": "",
        "DJ_BACKEND": "mysql",
    },
    "postgresql": {
        "DJ_HOST": "127.0.0.1",
        "DJ_PORT": "5432",
        "DJ_USER": "postgres",
        "DJ_PASS": "",
        "DJ_BACKEND": "postgresql",
    },
    "embedded": {},
}


#: A password as users choose them: quotes, a backslash and `$$` (shell, .env and SQL quoting).
LAB_PASSWORD = 'Lab\'s "pa$$word" \\ 1'


@dataclass(frozen=True)
class Credentials:
    """A database account as labs have them: a password, and rights on its own prefix only.

    `env`: the DJ_* settings for it; `prefix`: the start of every schema name it may create;
    `admin_env`: the same server's administrator (for set-up and inspection only).
    """

    env: dict[str, str]
    prefix: str
    admin_env: dict[str, str] = field(default_factory=dict)

    def test_prefix_env(self, package: str) -> dict[str, str]:
        """Settings that make a generated package's tests use this account's prefix."""
        return {f"{package.upper()}_TEST_PREFIX": f"{self.prefix}test_"}


def mariadb_root(sql: str) -> str:
    """Run SQL as this machine's MariaDB root (set-up only); its output, tab-separated."""
    done = subprocess.run(["mariadb", "-uroot", "-h127.0.0.1", "-P3306", "-N", "-B", "-e", sql],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def sql_string(text: str, backend: str) -> str:
    """A string literal: MariaDB reads backslashes as escapes, PostgreSQL (standard
    conforming strings) does not."""
    if backend == "mariadb":
        text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture(scope="session")
def mariadb_lab():
    """A MariaDB account with a password and ALL rights on `<user>\\_%` only (no global
    right, no other schema): what a lab gives one of its members."""
    user = f"lab{secrets.token_hex(3)}"
    mariadb_root(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY {sql_string(LAB_PASSWORD, 'mariadb')};"
        f"GRANT ALL PRIVILEGES ON `{user}\\_%`.* TO '{user}'@'%';"
    )
    env = {**BACKENDS["mariadb"], "DJ_USER": user, "DJ_PASS": LAB_PASSWORD}
    yield Credentials(env=env, prefix=f"{user}_", admin_env=dict(BACKENDS["mariadb"]))
    names = mariadb_root(f"SELECT schema_name FROM information_schema.schemata "
                         f"WHERE schema_name LIKE '{user}\\_%'").split()  # fmt: skip
    drops = "".join(f"DROP DATABASE `{name}`;" for name in names)  # in any order: no FK checks
    mariadb_root(f"SET FOREIGN_KEY_CHECKS=0;{drops}DROP USER '{user}'@'%';")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program of the newest installed major version."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4])
    )
    return found[-1] if found else pytest.skip(f"PostgreSQL's {name} is not installed")


@pytest.fixture(scope="session")
def scram_postgres():
    """A PostgreSQL cluster of its own, started for the tests with scram-sha-256 for every
    connection (`initdb -A scram-sha-256`: users' servers trust no one), on a free port.

    The lab's account has a password and owns one database, where it may create schemas.
    """
    folder = Path(tempfile.mkdtemp(prefix="dj-template-scram-"))
    data, sockets, pwfile = folder / "data", folder / "sockets", folder / "pw"
    sockets.mkdir()
    admin_password = LAB_PASSWORD + " admin"
    pwfile.write_text(admin_password + "\n", encoding="utf-8")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(folder, "postgres")
        for path in (sockets, pwfile):
            shutil.chown(path, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, postgres_bin("initdb"), "-D", str(data), "-U", "postgres",
                    "-A", "scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_postgres, postgres_bin("pg_ctl"), "-D", str(data), "-o", options,
                    "-l", str(folder / "log"), "-w", "start"], check=True, capture_output=True)  # fmt: skip
    admin_env = {"DJ_HOST": "127.0.0.1", "DJ_PORT": str(port), "DJ_USER": "postgres",
                 "DJ_PASS": admin_password, "DJ_BACKEND": "postgresql"}  # fmt: skip
    user = f"lab{secrets.token_hex(3)}"
    try:
        scram_psql(
            admin_env, f"CREATE ROLE {user} LOGIN PASSWORD {sql_string(LAB_PASSWORD, 'postgresql')}"
        )
        scram_psql(admin_env, f"CREATE DATABASE {user} OWNER {user}")
        env = {**admin_env, "DJ_USER": user, "DJ_PASS": LAB_PASSWORD, "DJ_DATABASE_NAME": user}
        yield Credentials(env=env, prefix=f"{user}_", admin_env=admin_env)
    finally:
        subprocess.run([*as_postgres, postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def scram_psql(env: dict[str, str], sql: str, database: str | None = None) -> str:
    """Run SQL over TCP with a password (scram), as the account `env` names."""
    done = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-h", env["DJ_HOST"], "-p", env["DJ_PORT"],
         "-U", env["DJ_USER"], "-d", database or env.get("DJ_DATABASE_NAME", "postgres"),
         "-c", sql],
        env={**os.environ, "PGPASSWORD": env["DJ_PASS"]},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="session")
def lab_accounts(request) -> dict[str, Credentials]:
    """Least-privileged, password-protected accounts by backend name, started on first use."""

    class Lazy(dict):
        def __missing__(self, backend: str) -> Credentials:
            name = {"mariadb": "mariadb_lab", "postgresql": "scram_postgres"}[backend]
            self[backend] = request.getfixturevalue(name)
            return self[backend]

    return Lazy()


def load_module(path: Path):
    """Import a Python file as a module of its own name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_hook(name: str):
    """Import a hook script as a module (its Jinja placeholder stays an unused string)."""
    return load_module(TEMPLATE / "hooks" / f"{name}.py")


@pytest.fixture(scope="session")
def pre_gen():
    return load_hook("pre_gen_project")


def clean_environment(**extra: str) -> dict[str, str]:
    """The current environment without DataJoint settings (nor options meant for this
    pytest run), plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DJ_") and key != "PYTEST_ADDOPTS"
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def project_env():
    """One virtual environment, shared by every generated project a test installs.

    Built with uv; generated projects are installed into it one after another
    (each with its own package name, so they do not overwrite each other).
    """
    uv = shutil.which("uv") or pytest.fail("uv is required: pip install uv")
    # Not under pytest's temporary root: every pytest session that starts (a generated
    # project's suite, say) makes that folder private again, and the embedded PostgreSQL,
    # run as its own unprivileged user when we are root, must reach its binaries in here.
    folder = Path(tempfile.mkdtemp(prefix="dj-template-venv-"))
    venv = folder / ".venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    yield venv
    shutil.rmtree(folder, ignore_errors=True)


def offline(*command: str) -> list[str]:
    """`command` in a new network namespace whose only interface, loopback, is up."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


def install(venv: Path, project: Path) -> None:
    """Install a generated project with its dev extra into `venv`."""
    subprocess.run(
        [
            shutil.which("uv"),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "-e",
            f"{project}[dev]",
        ],
        check=True,
    )


def installs_on_first_use(cookies_session, project_env, contexts: dict) -> Callable[[str], Path]:
    """name -> the project rendered from contexts[name] and installed with its dev extra into
    project_env, each made once, when a test first asks for it."""
    projects: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in projects:
            result = cookies_session.bake(extra_context=contexts[name])
            assert result.exit_code == 0, result.exception
            projects[name] = Path(result.project_path)
            install(project_env, projects[name])
        return projects[name]

    return get


def run_project_tests(
    venv: Path, project: Path, backend: str | dict[str, str], *paths: str, **extra: str
) -> subprocess.CompletedProcess:
    """Run a generated project's own test suite (or `paths` of it) against one backend: a
    name of BACKENDS or DJ_* settings (`extra`: more settings)."""
    settings = BACKENDS[backend] if isinstance(backend, str) else backend
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        cwd=project,
        env=clean_environment(**settings, **extra),
        capture_output=True,
        check=False,
        text=True,
    )


def unexpected_skips(result: subprocess.CompletedProcess) -> list[str]:
    """The skip lines of a generated suite's run, but for the one a lab member's account
    is expected to cause: test_access cannot create database users without the right."""
    return [
        line
        for line in result.stdout.splitlines()
        if line.startswith("SKIPPED") and not ("test_access.py" in line and "lacks" in line)
    ]


def package_of(project: Path) -> str:
    """The package name of a generated project (its one folder under src/)."""
    (package,) = [path.name for path in (project / "src").iterdir() if path.is_dir()
                  and not path.name.endswith(".egg-info")]  # fmt: skip
    return package


def leftover_schemas(account: Credentials, database: str | None = None) -> list[str]:
    """Schemas of the account's prefix that still exist (seen by the server's administrator)."""
    start = account.prefix.replace("_", "\\_")
    if account.env["DJ_BACKEND"] == "mysql":
        return mariadb_root(f"SELECT schema_name FROM information_schema.schemata "
                            f"WHERE schema_name LIKE '{start}%'").split()  # fmt: skip
    return scram_psql(account.admin_env, f"SELECT nspname FROM pg_namespace "
                      f"WHERE nspname LIKE '{start}%'", database).split()  # fmt: skip


GIT = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT}, check=True,
                   capture_output=True)  # fmt: skip


def commit_all(repo: Path, message: str) -> None:
    git("add", "-A", cwd=repo)
    git("commit", "-qm", message, cwd=repo)


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in a file, which must hold it."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def template_repo(tmp_path):
    """A git repository holding the template as it is in this working tree, tagged v0.1.0
    (cruft follows commits, copier follows version tags)."""
    repo = tmp_path / "template"
    shutil.copytree(
        TEMPLATE,
        repo,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"
        ),
    )
    git("init", "-q", "-b", "main", cwd=repo)
    commit_all(repo, "template")
    git("tag", "v0.1.0", cwd=repo)
    return repo


# The template before the toolkit moved into its folder: the schema modules in
# src/<pkg>/pipeline/, the template's code beside them.
OLD_LAYOUT = "4a024c5eac23ad677681e067dbabc9442bc33a21"


@pytest.fixture
def old_template_repo(tmp_path):
    """A git repository holding the template at OLD_LAYOUT, tagged v0.1.0; the current
    tree follows with `release_current_template`."""
    found = subprocess.run(["git", "cat-file", "-e", f"{OLD_LAYOUT}^{{commit}}"], cwd=TEMPLATE,
                           capture_output=True, check=False)  # fmt: skip
    if found.returncode:
        pytest.skip(f"this clone lacks the template's commit {OLD_LAYOUT[:7]} (shallow?)")
    repo = tmp_path / "template"
    repo.mkdir()
    archive = subprocess.run(["git", "archive", OLD_LAYOUT], cwd=TEMPLATE, capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x"], input=archive, cwd=repo, check=True)
    git("init", "-q", "-b", "main", cwd=repo)
    commit_all(repo, "template, old layout")
    git("tag", "v0.1.0", cwd=repo)
    return repo


def release_current_template(repo: Path) -> None:
    """The template as it is in this working tree, committed over the old one as v0.2.0."""
    git("rm", "-rq", ".", cwd=repo)
    shutil.copytree(TEMPLATE, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"))  # fmt: skip
    commit_all(repo, "template 0.2.0")
    git("tag", "v0.2.0", cwd=repo)


def edit_old_layout_as_a_lab(project: Path) -> None:
    """The lab's side in the old layout: a table in pipeline/subject.py, a schema added with
    the old add-schema (its module writer), a sample row renamed, a README line."""
    package = project / "src" / "workflow"
    with (package / "pipeline" / "subject.py").open("a", encoding="utf-8") as module:
        module.write(
            '\n\n@schema\nclass Weighing(dj.Manual):\n    definition = """\n'
            '    -> Subject\n    weighing_date : date\n    ---\n    weight : float64\n    """\n'
        )
    edit(package / "pipeline" / "sample_data.py", '"subject 1"', '"mouse M-101"')
    edit(project / "README.md", "## Setup", "## Setup\n\nOur lab runs this on the cluster.")
    scaffold = load_module(package / "scaffold.py")
    tables = {"subject": ["Subject", "Weighing"], "session": ["Session"]}
    scaffold.add_schema(package, project / "tests", "behavior", ["session"], tables=tables,
                        blob="<blob@main>")  # fmt: skip
    commit_all(project, "user edits")


def assert_moved_over(project: Path, template: Path) -> None:
    """After the update to 0.2.0 (`template`: its repository): the lab's pipeline at the top
    of its package, edits kept, imports fixed, the template's toolkit whole, nothing left
    over or conflicting."""
    package = project / "src" / "workflow"
    schemas = ["subject", "session", "ephys", "imaging", "analysis", "behavior"]
    assert sorted(path.name for path in package.iterdir() if path.name != "__pycache__") == sorted(
        [f"{name}.py" for name in schemas] + ["__init__.py", "__main__.py", "worker.py",
                                              "version.py", "toolkit"]
    )  # fmt: skip
    toolkit = template / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"
    files = {str(path.relative_to(toolkit / "toolkit")): path.read_bytes()
             for path in (toolkit / "toolkit").rglob("*") if path.is_file()}  # fmt: skip
    assert files == {str(path.relative_to(package / "toolkit")): path.read_bytes()
                     for path in (package / "toolkit").rglob("*") if path.is_file()
                     and "__pycache__" not in path.parts}  # fmt: skip
    assert "class Weighing(dj.Manual)" in (package / "subject.py").read_text()
    assert "from .toolkit.utils import simulate_channels" in (package / "ephys.py").read_text()
    assert "from . import session" in (package / "behavior.py").read_text()
    assert module_order(project, "workflow") == schemas
    assert '"behavior": "0.1.0"' in (package / "version.py").read_text()
    sample = (project / "tests" / "sample_data.py").read_text()
    assert '"mouse M-101"' in sample and "from workflow import session, subject" in sample
    assert "from workflow import behavior" in (project / "tests" / "test_behavior.py").read_text()
    assert "Our lab runs this on the cluster." in (project / "README.md").read_text()
    assert not list(project.rglob("*.rej")) and not list(project.rglob("*.orig"))
    texts = [path.read_text(errors="replace") for path in project.rglob("*")
             if path.is_file() and ".git" not in path.parts]  # fmt: skip
    assert not [text for text in texts if "<<<<<<<" in text or ">>>>>>>" in text]
    assert not list(project.rglob("pipeline")) and not (project / ".pipeline-plan.json").exists()
    assert not [p for p in project.rglob("*.py") if "workflow.pipeline" in p.read_text()]


def edit_as_a_lab(project: Path) -> None:
    """The lab's side of an update test: a table added to a generated module, a README line."""
    subject = project / "src" / "workflow" / "subject.py"
    with subject.open("a", encoding="utf-8") as module:
        module.write(
            '\n\n@schema\nclass Weighing(dj.Manual):\n    definition = """\n'
            '    -> Subject\n    weighing_date : date\n    ---\n    weight : float64\n    """\n'
        )
    edit(project / "README.md", "## Setup", "## Setup\n\nOur lab runs this on the cluster.")
    commit_all(project, "user edits")


def change_the_template(template_repo: Path) -> None:
    """The template's side (uncommitted): a helper, the module writer and the README change."""
    toolkit = (
        template_repo / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"
    ) / "toolkit"
    edit(toolkit / "utils.py", "DURATION = 2.0", "DURATION = 3.0")
    edit(
        toolkit / "scaffold.py",
        '    """One $name, entered by hand or from another lab system."""',
        '    """One $name, entered by hand or imported from another lab system."""',
    )
    with (template_repo / "{{cookiecutter.project_slug}}" / "README.md").open("a") as readme:
        readme.write("\nTemplate news.\n")


def assert_both_sides_kept(project: Path) -> None:
    """After an update: the lab's edits survived and the template's changes arrived."""
    package = project / "src" / "workflow"
    subject = (package / "subject.py").read_text()
    assert "class Weighing(dj.Manual)" in subject  # the lab's table survived
    assert "imported from another lab system" in subject  # the module writer's change arrived
    assert "DURATION = 3.0" in (package / "toolkit" / "utils.py").read_text()
    readme = (project / "README.md").read_text()
    assert "Our lab runs this on the cluster." in readme and "Template news." in readme
    assert not list(project.rglob("*.rej")) and not list(project.rglob("*.orig"))
    assert not (project / ".pipeline-plan.json").exists()


def module_order(project: Path, package: str) -> list[str]:
    """The names in MODULES of the generated pipeline's __init__.py."""
    tree = ast.parse((project / "src" / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "MODULES":
            return [element.id for element in node.value.elts]
    raise AssertionError("MODULES not found")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `first` are handed out before the others."""
    # A stable sort: apart from the `first` ones, the tests stay in the order collected.
    items.sort(key=lambda item: item.get_closest_marker("first") is None)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: without xdist, not called
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (`--dist loadgroup`): the tests of a module share a worker, so its
    module-scoped renders and installs are made once, unless the module spreads its tests
    over the workers (`SPREAD_OVER_WORKERS = True`: long independent tests, each of which
    installs what it needs).

    A scheduler of our own: xdist's loadgroup marks groups by renaming test ids
    (`item._nodeid`), which pytest 9.2 no longer reads, so every test went its own way and
    each worker rendered and installed a module's project again."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    @functools.cache
    def spread(path: str) -> bool:
        source = Path(config.rootpath, path)
        text = source.read_text(encoding="utf-8") if source.is_file() else ""
        return "\nSPREAD_OVER_WORKERS = True" in text

    # tests/toolkit: a test's database and pipeline (its fixtures' parameters, first in its
    # id), which a worker declares and fills once for all the tests it is given.
    combination = re.compile(r"\[((?:starter|lab)-(?:mariadb|postgresql|embedded))[-\]]")

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if not spread(path):
                return path
            found = combination.search(nodeid) if path.startswith("tests/toolkit/") else None
            return f"toolkit[{found[1]}]" if found else nodeid

    return ByModule(config, log)
