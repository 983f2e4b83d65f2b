"""Projects created with cruft stay updatable: user edits survive, template changes arrive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    GIT,
    assert_both_sides_kept,
    change_the_template,
    commit_all,
    edit,
    edit_as_a_lab,
    module_order,
)

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env={**os.environ, **GIT}, capture_output=True, text=True, check=check
    )


def cruft(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "cruft", *args, cwd=cwd, check=check)


@pytest.fixture
def project(tmp_path, template_repo):
    """A project created with cruft and committed, as a user would."""
    out = tmp_path / "out"
    cruft("create", "--no-input", "--output-dir", str(out), str(template_repo), cwd=tmp_path)
    project = out / "my-pipeline"
    run("git", "init", "-q", "-b", "main", cwd=project)
    commit_all(project, "generated")
    return project


def test_fresh_project_is_current(project, template_repo):
    state = json.loads((project / ".cruft.json").read_text())
    assert state["template"] == str(template_repo)
    assert state["context"]["cookiecutter"]["package_name"] == "workflow"
    assert cruft("check", cwd=project).returncode == 0
    assert not (project / ".pipeline-plan.json").exists()


def test_update_keeps_user_edits_and_brings_template_changes(project, template_repo):
    package = project / "src" / "workflow"
    edit_as_a_lab(project)
    change_the_template(template_repo)
    commit_all(template_repo, "template changes")
    assert cruft("check", cwd=project, check=False).returncode != 0

    result = cruft("update", "-y", cwd=project, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_both_sides_kept(project)
    # Nothing duplicated or left over: the package holds what a fresh render holds.
    fresh = template_repo.parent / "fresh"
    run(sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(fresh), str(template_repo),
        cwd=template_repo.parent)  # fmt: skip

    def modules(root: Path) -> list[str]:
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*.py") if "__pycache__" not in p.parts
        )

    assert modules(package) == modules(fresh / "my-pipeline" / "src" / "workflow")
    commit_all(project, "update")
    assert cruft("check", cwd=project).returncode == 0


def test_conflicting_edits_are_surfaced(project, template_repo):
    utils = project / "src" / "workflow" / "utils.py"
    edit(utils, "DURATION = 2.0", "DURATION = 5.0  # our rigs record longer")
    commit_all(project, "user edit")
    edit(
        template_repo
        / "{{cookiecutter.project_slug}}"
        / "src"
        / "{{cookiecutter.package_name}}"
        / "utils.py",
        "DURATION = 2.0",
        "DURATION = 3.0",
    )
    commit_all(template_repo, "template edit")

    cruft("update", "-y", cwd=project, check=False)
    text = utils.read_text()
    rejected = list(project.rglob("utils.py.rej"))
    assert ("<<<<<<<" in text and "DURATION = 3.0" in text) or rejected
    assert "DURATION = 5.0" in text  # the user's line is still there
    status = run("git", "status", "--porcelain", cwd=project).stdout
    assert "utils.py" in status  # the conflict shows up for the user to resolve


def test_adding_a_schema_by_re_rendering(project):
    result = cruft(
        "update",
        "-y",
        "--variables-to-update",
        json.dumps(
            {
                "schemas": "subject; session <- subject; ephys <- session; imaging <- session; "
                "analysis <- ephys, imaging; behavior <- session"
            }
        ),
        cwd=project,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    package = project / "src" / "workflow" / "pipeline"
    assert (package / "behavior.py").is_file()
    assert "behavior" in module_order(project, "workflow")
    assert '"behavior": "0.1.0"' in (package / "version.py").read_text()
