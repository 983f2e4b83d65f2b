"""copier: the same questions and rules as cookiecutter, the same project, updates that merge.

Everything runs the real clients: copier's and cookiecutter's command lines, cruft, and
copier's interactive prompt in a pseudo-terminal.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import yaml
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
    load_hook,
    release_current_template,
    run_project_tests,
    unexpected_skips,
)

BIN = Path(sys.executable).parent
ANSWERS_FILES = {".copier-answers.yml", ".cruft.json"}  # each tool's own


def run(*args: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **GIT, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode:
        raise AssertionError(f"{args[:2]} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def copier_module():
    return load_hook("copier_template")


def copier(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(BIN / "copier", *args, cwd=cwd, check=check)


def tree(root: Path) -> dict[str, Path]:
    """Every file of a generated project but the tools' own answers files."""
    return {
        str(path.relative_to(root)): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in ANSWERS_FILES and ".git" not in path.parts
    }


def test_copier_yml_is_derived_from_cookiecutter_json(copier_module):
    """One source of truth: copier.yml is what the script writes from cookiecutter.json."""
    assert (TEMPLATE / "copier.yml").read_text(encoding="utf-8") == copier_module.copier_yml(), (
        "copier.yml is stale: run `python hooks/copier_template.py`"
    )
    questions = yaml.safe_load((TEMPLATE / "copier.yml").read_text())
    cookiecutter = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    assert [q for q in questions if not q.startswith("_")] == [
        q for q in cookiecutter if not q.startswith("_")
    ]
    choices = load_hook("pre_gen_project").CHOICES
    for name, allowed in choices.items():
        assert questions[name]["choices"] == list(allowed)


def test_every_license_choice_has_its_text():
    """Offering a license is one text file and one name in the hook's choices."""
    texts = {path.stem for path in (TEMPLATE / "templates" / "licenses").glob("*.txt")}
    assert texts == set(load_hook("pre_gen_project").CHOICES["license"])
    assert "GPL-3.0-or-later" in texts


MATRIX = [
    {},
    {"database_backend": "postgresql", "object_store": "s3", "license": "GPL-3.0-or-later"},
    {"database_backend": "mysql", "object_store": "none", "license": "BSD-3-Clause"},
    {
        "database_backend": "postgresql",
        "object_store": "file",
        "package_name": "lab",
        "project_name": "Lab Rig Pipeline",
        "schemas": "lab; animal; rig <- lab; session <- animal, rig; summary <- session, animal",
    },
]


@pytest.mark.parametrize("answers", MATRIX, ids=lambda a: "-".join(a.values())[:40] or "default")
def test_cookiecutter_cruft_and_copier_make_the_same_project(tmp_path, template_repo, answers):
    """As scientific-python/cookie does: three tools, one tree (apart from answers files)."""
    pairs = [f"{key}={value}" for key, value in answers.items()]
    out = {tool: tmp_path / tool for tool in ("cookiecutter", "cruft", "copier")}
    run(BIN / "cookiecutter", "--no-input", "-o", out["cookiecutter"], template_repo, *pairs,
        cwd=tmp_path)  # fmt: skip
    run(BIN / "cruft", "create", "--no-input", "--output-dir", out["cruft"],
        "--extra-context", json.dumps(answers), template_repo, cwd=tmp_path)  # fmt: skip
    data = [arg for pair in pairs for arg in ("--data", pair)]
    copier("copy", "--quiet", "--trust", "--defaults", *data, template_repo,
           out["copier"] / "project", cwd=tmp_path)  # fmt: skip
    projects = {tool: next(path.iterdir()) for tool, path in out.items()}
    reference = tree(projects["cookiecutter"])
    assert any(name.endswith("sample_data.py") for name in reference)  # modules were written
    assert not [name for name in reference if "__pycache__" in name]  # no build output
    for tool in ("cruft", "copier"):
        files = tree(projects[tool])
        assert sorted(files) == sorted(reference), tool
        different = [
            name for name in reference if not filecmp.cmp(reference[name], files[name], False)
        ]
        assert not different, f"{tool} differs from cookiecutter in {different}"
    assert (projects["cruft"] / ".cruft.json").is_file()
    recorded = yaml.safe_load((projects["copier"] / ".copier-answers.yml").read_text())
    assert {key: recorded[key] for key in answers} == answers


def test_structured_spec_from_a_data_file(tmp_path, template_repo):
    """The schema spec's YAML form, through copier's --data-file, in the order written."""
    spec = {
        "mouse": {"description": "Mice of the colony."},
        "scan": ["mouse"],
        "behavior": ["mouse"],
        "stats": {"upstream": ["scan", "behavior"], "role": "analysis"},
    }
    data = tmp_path / "answers.yml"
    data.write_text(yaml.safe_dump({"package_name": "lab", "schemas": spec}, sort_keys=False))
    project = tmp_path / "project"
    copier("copy", "--quiet", "--trust", "--defaults", "--data-file", data, template_repo,
           project, cwd=tmp_path)  # fmt: skip
    init = (project / "src" / "lab" / "__init__.py").read_text()
    assert re.search(r"MODULES = \(mouse, scan, behavior, stats\)", init), init
    assert "Mice of the colony." in (project / "src" / "lab" / "mouse.py").read_text()
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert list(recorded["schemas"]) == list(spec)


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("license=GPL", "Invalid choice for 'license'"),
        ("author_email=alice.example.org", "rule email"),
        ("schemas=a <- b; b <- a", "rule spec-cycle"),
        ("package_name=datajoint", "rule package-shadow"),
        ("database_port=99999", "rule port"),
    ],
)
def test_copier_refuses_a_bad_answer_and_writes_nothing(tmp_path, template_repo, pair, message):
    project = tmp_path / "project"
    result = copier("copy", "--quiet", "--trust", "--defaults", "--data", pair, template_repo,
                    project, cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
    assert not project.exists()


def prompt_texts() -> dict[str, str]:
    return json.loads((TEMPLATE / "cookiecutter.json").read_text())["__prompts__"]


@pytest.mark.slow
def test_answers_are_checked_as_they_are_given(tmp_path, template_repo):
    """A bad answer is refused at its own question, with the hook's message, and asked again.

    S3 questions are not asked for a local store.
    """
    project = tmp_path / "project"
    child = pexpect.spawn(
        str(BIN / "copier"),
        ["copy", "--trust", str(template_repo), str(project)],
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 250),
        env={**os.environ, "TERM": "xterm"},
    )
    log: list[str] = []
    prompts = prompt_texts()
    try:
        for name, text in prompts.items():
            if name in {"s3_endpoint", "s3_bucket"}:
                continue  # the store is a folder: never asked
            child.expect_exact(text)
            log.append(child.before)
            if name == "author_email":
                child.send("\x15alice.example.org\r")
                child.expect_exact("rule email")  # refused at once, the question stays
                child.send("\x15alice@example.org\r")
            elif name == "schemas":
                child.send("\x15a <- b; b <- a\r")
                child.expect_exact("rule spec-cycle")
                child.send("\x15mouse; scan <- mouse\r")
            else:
                child.send("\r")
        child.expect(pexpect.EOF, timeout=120)
        log.append(child.before)
    finally:
        child.close()
    transcript = "".join(log)
    assert child.exitstatus == 0, transcript[-2000:]
    assert "S3 endpoint" not in transcript and "S3 bucket" not in transcript, transcript
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["author_email"] == "alice@example.org"
    assert answers["schemas"] == "mouse; scan <- mouse"
    assert "s3_bucket" not in answers
    assert (project / "src" / "workflow" / "scan.py").is_file()


def test_cookiecutter_refusal_says_how_to_retry_without_retyping(tmp_path, template_repo):
    """cookiecutter saved the answers before our hook refused one: --replay-file reuses them."""
    config = tmp_path / "config.yaml"
    replay_dir = tmp_path / "replay"
    config.write_text(yaml.safe_dump({"replay_dir": str(replay_dir)}))
    env = {"COOKIECUTTER_CONFIG": str(config)}
    out = tmp_path / "out"
    result = run(BIN / "cookiecutter", "--no-input", "-o", out, template_repo, "license=GPL",
                 "package_name=lab", cwd=tmp_path, check=False, **env)  # fmt: skip
    assert result.returncode != 0
    assert "rule choice" in result.stderr
    match = re.search(r"Your answers are saved in (\S+): correct 'license' there", result.stderr)
    assert match, result.stderr
    replay = Path(match.group(1))
    assert replay.parent == replay_dir
    assert f"cookiecutter --replay-file {replay} {template_repo}" in result.stderr
    saved = json.loads(replay.read_text())
    saved["cookiecutter"]["license"] = "GPL-3.0-or-later"
    replay.write_text(json.dumps(saved))
    run(BIN / "cookiecutter", "-o", out, "--replay-file", replay, template_repo, cwd=tmp_path,
        **env)  # fmt: skip
    project = out / "my-pipeline"
    assert (project / "src" / "lab" / "__init__.py").is_file()  # the other answers were kept
    assert "GNU GENERAL PUBLIC LICENSE" in (project / "LICENSE").read_text()


@pytest.fixture
def copier_project(tmp_path, template_repo):
    """A project created with copier from template 0.1.0 and committed, as a user would."""
    project = tmp_path / "project"
    copier("copy", "--quiet", "--trust", "--defaults", "--vcs-ref", "v0.1.0", template_repo,
           project, cwd=tmp_path)  # fmt: skip
    run("git", "init", "-q", "-b", "main", cwd=project)
    commit_all(project, "generated")
    return project


def release(template_repo: Path, version: str) -> None:
    commit_all(template_repo, f"template {version}")
    run("git", "tag", f"v{version}", cwd=template_repo)


@pytest.mark.slow
def test_copier_update_keeps_edits_and_brings_template_changes(copier_project, template_repo):
    project = copier_project
    edit_as_a_lab(project)
    change_the_template(template_repo)
    release(template_repo, "0.2.0")

    copier("update", "--trust", "--defaults", cwd=project)
    assert_both_sides_kept(project)
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v0.2.0"
    status = run("git", "status", "--porcelain", cwd=project).stdout
    assert "UU" not in status


@pytest.mark.slow
def test_copier_update_surfaces_conflicts(copier_project, template_repo):
    project = copier_project
    utils = project / "src" / "workflow" / "toolkit" / "utils.py"
    edit(utils, "DURATION = 2.0", "DURATION = 5.0  # our rig records longer")
    commit_all(project, "user edit")
    template_utils = (
        (template_repo / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}")
        / "toolkit"
        / "utils.py"
    )
    edit(template_utils, "DURATION = 2.0", "DURATION = 3.0")
    release(template_repo, "0.2.0")
    copier("update", "--trust", "--defaults", "--conflict", "inline", cwd=project)
    text = utils.read_text()
    assert "<<<<<<<" in text and ">>>>>>>" in text
    assert "DURATION = 5.0  # our rig records longer" in text and "DURATION = 3.0" in text


@pytest.mark.slow
def test_copier_migration_moves_a_renamed_file(copier_project, template_repo, copier_module):
    """A template version that renames a file carries a migration; the lab's edit follows it."""
    project = copier_project
    with (project / "docs" / "deploy.md").open("a") as page:
        page.write("\nOur cluster notes.\n")
    commit_all(project, "user edit")
    docs = template_repo / "{{cookiecutter.project_slug}}" / "docs"
    run("git", "mv", docs / "deploy.md", docs / "deployment.md", cwd=template_repo)
    for page in ("mkdocs.yml",):
        path = template_repo / "{{cookiecutter.project_slug}}" / page
        path.write_text(path.read_text().replace("deploy.md", "deployment.md"))
    script = template_repo / "hooks" / "copier_template.py"
    edit(script, "MIGRATIONS: list[dict[str, Any]] = [\n",
         'MIGRATIONS: list[dict[str, Any]] = [{"version": "0.2.0", '
         '"rename": {"docs/deploy.md": "docs/deployment.md"}},\n')  # fmt: skip
    run(sys.executable, script, cwd=template_repo)  # copier.yml follows
    assert "migrate" in (template_repo / "copier.yml").read_text()
    release(template_repo, "0.2.0")

    copier("update", "--trust", "--defaults", "--conflict", "inline", cwd=project)
    assert not (project / "docs" / "deploy.md").exists()
    moved = (project / "docs" / "deployment.md").read_text()
    assert "Our cluster notes." in moved  # never dropped
    assert "deployment.md" in (project / "mkdocs.yml").read_text()


@pytest.mark.slow
def test_copier_update_moves_an_old_layout_project_over(tmp_path, old_template_repo, project_env,
                                                        lab_accounts):  # fmt: skip
    """A project generated before the toolkit had its folder (schema modules in
    src/<pkg>/pipeline/) crosses to 0.2.0 with `copier update`: the migration sets the lab's
    pipeline aside and merges it into the new places; the lab's suite then passes."""

    def old_copier(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
        # The old hook looks for the template in its parent process's folder too: the
        # parent is a shell there, not pytest here in the template's own checkout.
        return run("sh", "-c", f'"{BIN / "copier"}" "$@" || exit $?', "sh", *args, cwd=cwd)

    project = tmp_path / "project"
    old_copier("copy", "--quiet", "--trust", "--defaults", "--vcs-ref", "v0.1.0",
               old_template_repo, project, cwd=tmp_path)  # fmt: skip
    assert (project / "src" / "workflow" / "pipeline" / "subject.py").is_file()
    run("git", "init", "-q", "-b", "main", cwd=project)
    commit_all(project, "generated")
    edit_old_layout_as_a_lab(project)
    release_current_template(old_template_repo)

    result = old_copier("update", "--trust", "--defaults", "--conflict", "inline", cwd=project)
    assert "src/workflow/pipeline/subject.py -> src/workflow/subject.py" in result.stderr
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v0.2.0"
    assert_moved_over(project, old_template_repo)
    assert not list((project / ".git").glob("dj-template-*"))  # what was set aside is gone
    commit_all(project, "template 0.2.0")
    install(project_env, project)
    account = lab_accounts["mariadb"]
    tests = run_project_tests(project_env, project, account.env, "-vv",
                              **account.test_prefix_env("workflow"))  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert not unexpected_skips(tests), tests.stdout
    assert "test_behavior_counts_its_inputs PASSED" in tests.stdout, tests.stdout[-3000:]
