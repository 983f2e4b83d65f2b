"""Generated projects install and pass their own test suites on every backend.

One uv environment serves every project (see conftest.project_env); each spec runs its
suite on the backends SPEC_BACKENDS names -- MariaDB and PostgreSQL as a lab member's
password-protected, least-privileged account (conftest.lab_accounts), the embedded PostgreSQL
fallback -- and the default spec through `uv run` and plain pip too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import (
    clean_environment,
    installs_on_first_use,
    leftover_schemas,
    package_of,
    run_project_tests,
    scram_psql,
    unexpected_skips,
)

pytestmark = pytest.mark.slow
# Long and independent tests: the workers share them (see conftest.py).
SPREAD_OVER_WORKERS = True

LARGE_SPEC = "; ".join(
    ["s0", "t0"]
    + [f"s{i} <- s{i - 1}" + (f", s{i - 7}, t0" if i % 7 == 0 else "") for i in range(1, 99)]
)

SPECS = {
    "default": {},
    # Two roots, a diamond, a root joined with downstream schemas, PostgreSQL, no store,
    # and text that needs escaping everywhere it appears.
    "custom": {
        "project_name": 'José Müller\'s "Lab" \\o/',
        "description": 'He said "hi" \\o/',
        "author_name": "Seán O'Brien",
        "package_name": "lab",
        "database_backend": "postgresql",
        "object_store": "none",
        "schemas": "mouse; rig; scan <- mouse, rig; trace <- scan; spikes <- scan; summary <- trace, spikes, mouse",
    },
    # Objects in S3, served by moto on loopback during the generated tests.
    "s3": {"package_name": "s3lab", "project_name": "S3 Lab", "object_store": "s3"},
    # A single schema: no computed table, nothing in the store.
    "single": {"package_name": "single", "project_name": "Single", "schemas": "colony"},
    # 100 schemas: a chain with diamonds every seventh schema, and a second root.
    "large": {"package_name": "big", "project_name": "Big Pipeline", "schemas": LARGE_SPEC},
}
# Which backends each spec's suite runs on.
SPEC_BACKENDS = {
    "default": ["mariadb", "postgresql"],  # embedded: test_uv_run_in_a_generated_project
    "custom": ["mariadb", "postgresql"],  # on PostgreSQL in a database of its own: see below
    "s3": ["mariadb", "postgresql"],
    "single": ["embedded"],
    "large": ["mariadb"],  # the laptop path is the same engine as PostgreSQL, covered above
}
CASES = [
    # The 100-schema suite takes longest: started first, it does not end the run alone.
    pytest.param(
        spec, backend, id=f"{spec}-{backend}", marks=[pytest.mark.first] * (spec == "large")
    )
    for spec, backends in SPEC_BACKENDS.items()
    for backend in backends
]


@pytest.fixture(scope="module")
def installed_projects(cookies_session, project_env):
    """Bake and install each spec once, on first use."""
    return installs_on_first_use(cookies_session, project_env, SPECS)


@pytest.mark.parametrize(("spec", "backend"), CASES)
def test_generated_suite_passes(installed_projects, project_env, lab_accounts, spec, backend):
    """The suite passes as a lab member runs it: with a password, and rights on its own prefix
    only (MariaDB) or on a database of its own in a cluster that authenticates with
    scram-sha-256 (PostgreSQL). It must leave no schema behind."""
    project = installed_projects(spec)
    if backend == "embedded":  # in the configured database, created on the embedded server
        result = run_project_tests(project_env, project, backend, DJ_DATABASE_NAME="lab_data")
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        return
    account = lab_accounts[backend]
    settings = {**account.env, **account.test_prefix_env(package_of(project))}
    database = None
    if backend == "postgresql":  # a database of its own: suites running beside it do not count
        database = f"{account.env['DJ_USER']}_{secrets.token_hex(3)}"
        scram_psql(account.admin_env, f"CREATE DATABASE {database} OWNER {account.env['DJ_USER']}")
        settings["DJ_DATABASE_NAME"] = database
    before = leftover_schemas(account, database)
    result = run_project_tests(project_env, project, settings)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert not unexpected_skips(result), result.stdout[-3000:]
    assert leftover_schemas(account, database) == before


def test_uv_run_in_a_generated_project(cookies):
    """`uv run` creates the project's own environment and runs its suite, on the embedded
    database as on a laptop with nothing configured."""
    # Outside pytest's temporary root, which every pytest session that starts makes private
    # again: the embedded server runs as its own user and loads plpgsql from this venv.
    outside = Path(tempfile.mkdtemp(prefix="dj-template-uv-run-"))
    project = outside / "my-pipeline"
    shutil.copytree(cookies.bake().project_path, project)
    outside.chmod(0o755)
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
    shutil.rmtree(outside, ignore_errors=True)
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
    check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"],
                           capture_output=True, check=False, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout
    # The whole suite runs in the uv environment above; here, what needs the driver and DataJoint.
    result = run_project_tests(venv, project, "mariadb", "tests/test_pipeline.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
