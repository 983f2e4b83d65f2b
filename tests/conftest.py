"""Shared fixtures: the template's hooks as modules, and one environment for generated projects."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
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


def run_project_tests(
    venv: Path, project: Path, backend: str, *paths: str, **extra: str
) -> subprocess.CompletedProcess:
    """Run a generated project's own test suite (or `paths` of it) against one backend
    (`extra`: settings)."""
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        cwd=project,
        env=clean_environment(**BACKENDS[backend], **extra),
        capture_output=True,
        check=False,
        text=True,
    )


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


def edit_as_a_lab(project: Path) -> None:
    """The lab's side of an update test: a table added to a generated module, a README line."""
    subject = project / "src" / "workflow" / "pipeline" / "subject.py"
    with subject.open("a", encoding="utf-8") as module:
        module.write(
            '\n\n@schema\nclass Weighing(dj.Manual):\n    definition = """\n'
            '    -> Subject\n    weighing_date : date\n    ---\n    weight : float64\n    """\n'
        )
    edit(project / "README.md", "## Setup", "## Setup\n\nOur lab runs this on the cluster.")
    commit_all(project, "user edits")


def change_the_template(template_repo: Path) -> None:
    """The template's side (uncommitted): a helper, the module writer and the README change."""
    package = (
        template_repo / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"
    )
    edit(package / "utils.py", "DURATION = 2.0", "DURATION = 3.0")
    edit(
        package / "scaffold.py",
        '    """One $name, entered by hand or from another lab system."""',
        '    """One $name, entered by hand or imported from another lab system."""',
    )
    with (template_repo / "{{cookiecutter.project_slug}}" / "README.md").open("a") as readme:
        readme.write("\nTemplate news.\n")


def assert_both_sides_kept(project: Path) -> None:
    """After an update: the lab's edits survived and the template's changes arrived."""
    package = project / "src" / "workflow"
    subject = (package / "pipeline" / "subject.py").read_text()
    assert "class Weighing(dj.Manual)" in subject  # the lab's table survived
    assert "imported from another lab system" in subject  # the module writer's change arrived
    assert "DURATION = 3.0" in (package / "utils.py").read_text()
    readme = (project / "README.md").read_text()
    assert "Our lab runs this on the cluster." in readme and "Template news." in readme
    assert not list(project.rglob("*.rej")) and not list(project.rglob("*.orig"))
    assert not (project / ".pipeline-plan.json").exists()


def module_order(project: Path, package: str) -> list[str]:
    """The names in MODULES of the generated pipeline's __init__.py."""
    tree = ast.parse((project / "src" / package / "pipeline" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "MODULES":
            return [element.id for element in node.value.elts]
    raise AssertionError("MODULES not found")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`): the tests of a module share a worker, so its
    module-scoped renders and installs are made once, unless the module spreads its tests
    over the workers (`SPREAD_OVER_WORKERS = True`: long independent tests, each of which
    installs what it needs). Tests marked `first` are handed out before the others."""
    # A stable sort: apart from the `first` ones, the tests stay in the order collected.
    items.sort(key=lambda item: item.get_closest_marker("first") is None)
    for item in items:
        module = item.module
        if not getattr(module, "SPREAD_OVER_WORKERS", False):
            item.add_marker(pytest.mark.xdist_group(module.__name__))
