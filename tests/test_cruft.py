"""Projects created with cruft stay updatable: user edits survive, template changes arrive."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    GIT,
    TEMPLATE,
    assert_both_sides_kept,
    assert_moved_over,
    change_the_template,
    commit_all,
    edit,
    edit_as_a_lab,
    edit_old_layout_as_a_lab,
    install,
    module_order,
    release_current_template,
    run_project_tests,
    unexpected_skips,
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
    utils = project / "src" / "workflow" / "toolkit" / "utils.py"
    edit(utils, "DURATION = 2.0", "DURATION = 5.0  # our rigs record longer")
    commit_all(project, "user edit")
    edit(
        template_repo
        / "{{cookiecutter.project_slug}}"
        / "src"
        / "{{cookiecutter.package_name}}"
        / "toolkit"
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
    package = project / "src" / "workflow"
    assert (package / "behavior.py").is_file()
    assert "behavior" in module_order(project, "workflow")
    assert '"behavior": "0.1.0"' in (package / "version.py").read_text()


def readme_steps(template: Path) -> list[str]:
    """The commands of the generated README's steps for crossing to 0.2.0 with cruft, run
    against `template` (a clone of the template) with this Python's tools."""
    readme = (TEMPLATE / "{{cookiecutter.project_slug}}" / "README.md").read_text()
    section = readme.split("### Updating from a template older than 0.2.0", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)[1]
    steps = []
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith("git clone"):
            command = command.replace("/tmp/dj-template", shlex.quote(str(template)))
            command = re.sub(r"^python ", f"{shlex.quote(sys.executable)} ", command)
            command = re.sub(r"^cruft ", f"{shlex.quote(sys.executable)} -m cruft ", command)
            steps.append(command)
    assert any("migrate 0.2.0 before" in step for step in steps), steps
    return steps


def test_cruft_update_moves_an_old_layout_project_over(
    tmp_path, old_template_repo, project_env, lab_accounts
):
    """A project generated before the toolkit had its folder (schema modules in
    src/<pkg>/pipeline/) crosses to 0.2.0 by the README's steps around `cruft update`."""
    out = tmp_path / "out"
    cruft("create", "--no-input", "--output-dir", str(out), str(old_template_repo), cwd=tmp_path)
    project = out / "my-pipeline"
    assert (project / "src" / "workflow" / "pipeline" / "subject.py").is_file()
    run("git", "init", "-q", "-b", "main", cwd=project)
    commit_all(project, "generated")
    edit_old_layout_as_a_lab(project)
    release_current_template(old_template_repo)

    for step in readme_steps(old_template_repo):
        done = run("sh", "-c", step, cwd=project, check=False)
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
    assert_moved_over(project, old_template_repo)
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""  # all committed
    assert cruft("check", cwd=project).returncode == 0
    install(project_env, project)
    account = lab_accounts["mariadb"]
    tests = run_project_tests(project_env, project, account.env, "-vv",
                              **account.test_prefix_env("workflow"))  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert not unexpected_skips(tests), tests.stdout
    assert "test_behavior_counts_its_inputs PASSED" in tests.stdout, tests.stdout[-3000:]
