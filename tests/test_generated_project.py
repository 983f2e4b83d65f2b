"""Generated projects install and pass their own test suites on every backend.

One uv environment serves every project (see conftest.project_env); each project
runs its suite against MariaDB, PostgreSQL and the embedded PostgreSQL fallback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BACKENDS, clean_environment, install, run_project_tests

pytestmark = pytest.mark.slow

SPECS = {
    "default": {},
    # Two roots, a diamond, a root joined with downstream schemas, PostgreSQL, no store.
    "custom": {
        "project_name": "Lab Pipeline",
        "package_name": "lab",
        "database_backend": "postgresql",
        "object_store": "none",
        "schemas": "mouse; rig; scan <- mouse, rig; trace <- scan; spikes <- scan; summary <- trace, spikes, mouse",
    },
}


@pytest.fixture(scope="module", params=list(SPECS))
def installed_project(request, cookies_session, project_env):
    result = cookies_session.bake(extra_context=SPECS[request.param])
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    install(project_env, project)
    return project


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_generated_suite_passes(installed_project, project_env, backend):
    result = run_project_tests(project_env, installed_project, backend)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


def test_generated_suite_drops_its_schemas(installed_project, project_env):
    """A run leaves nothing behind on the server it used."""
    run_project_tests(project_env, installed_project, "postgresql")
    leftover = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-tAc",
            "select nspname from pg_namespace where nspname like 'test\\_%'",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert leftover.stdout.strip() == ""


def test_uv_run_in_a_generated_project(cookies):
    """`uv run` creates the project's own environment and runs its suite."""
    project = Path(cookies.bake().project_path)
    result = subprocess.run(
        [
            shutil.which("uv"),
            "run",
            "-q",
            "--extra",
            "dev",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=project,
        env=clean_environment(UV_PYTHON=sys.executable),
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_pip_install_in_a_generated_project(cookies, tmp_path):
    """Plain pip and venv work too (slower: pip resolves without uv's cache)."""
    project = Path(cookies.bake(extra_context={"package_name": "pip_pipeline"}).project_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", f"{project}[dev]"],
        capture_output=True,
        check=False,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    result = run_project_tests(venv, project, "mariadb")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
