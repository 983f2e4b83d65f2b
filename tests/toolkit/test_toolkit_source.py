"""The toolkit's source: plain Python that no template tool changes, clean for ruff and mypy.

Generated projects exclude the toolkit from their own ruff and mypy runs (it is the
template's, replaced whole by updates), so it is checked here, with the generated
project's configuration, at the versions the root pyproject's test extra pins.
"""

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GIT, commit_all, git

from .conftest import TEMPLATE, TOOLKIT

BIN = Path(sys.executable).parent
DELIMITERS = ("{{", "{%", "{#")


def tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **GIT}, timeout=600, check=False)  # fmt: skip


def source_files() -> list[Path]:
    return sorted(
        path
        for path in TOOLKIT.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def test_the_toolkit_holds_no_template_delimiters():
    """cookiecutter and copier copy it without rendering; with no delimiter in it, even a
    render could not change it."""
    files = source_files()
    assert any(path.name == "project.py" for path in files)
    found = [
        f"{path.relative_to(TOOLKIT)}: {delimiter}"
        for path in files
        for delimiter in DELIMITERS
        if delimiter in path.read_text(encoding="utf-8")
    ]
    assert found == []


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, Path]:
    """The default project made by cookiecutter and by copier (from a git copy of the
    template as it is in this working tree)."""
    folder = tmp_path_factory.mktemp("renders")
    repo = folder / "template"
    shutil.copytree(TEMPLATE, repo, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"))  # fmt: skip
    git("init", "-q", "-b", "main", cwd=repo)
    commit_all(repo, "template")
    made = tool("cookiecutter", "--no-input", "-o", str(folder / "cookiecutter"), str(repo),
                cwd=folder)  # fmt: skip
    assert made.returncode == 0, made.stderr
    made = tool("copier", "copy", "--quiet", "--trust", "--defaults", "--vcs-ref", "HEAD",
                str(repo), str(folder / "copier" / "project"), cwd=folder)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return {name: next((folder / name).iterdir()) for name in ("cookiecutter", "copier")}


@pytest.mark.parametrize("maker", ["cookiecutter", "copier"])
def test_a_render_holds_the_toolkit_byte_for_byte(renders, maker):
    copied = renders[maker] / "src" / "workflow" / "toolkit"
    expected = [path.relative_to(TOOLKIT) for path in source_files()]
    got = sorted(path.relative_to(copied) for path in copied.rglob("*") if path.is_file())
    assert got == expected
    _, mismatch, errors = filecmp.cmpfiles(TOOLKIT, copied, [str(p) for p in expected],
                                           shallow=False)  # fmt: skip
    assert (mismatch, errors) == ([], [])


@pytest.fixture(scope="module")
def checked_project(renders) -> Path:
    """The cookiecutter render, its configuration made to check the toolkit (the generated
    pyproject leaves it out of ruff and mypy)."""
    project = renders["cookiecutter"]
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    left_out = [
        'extend-exclude = ["src/workflow/toolkit"]',
        'exclude = ["^src/[^/]+/toolkit/"]',
        'module = ["workflow.toolkit", "workflow.toolkit.*"]\nignore_errors = true',
    ]
    for line in left_out:
        assert line in text, f"the generated pyproject no longer holds {line!r}: update this test"
        text = text.replace(line, "")
    text = text.replace("[[tool.mypy.overrides]]\n# The toolkit is the template's", "# The")
    pyproject.write_text(text, encoding="utf-8")
    return project


def test_ruff_accepts_the_toolkit(checked_project):
    config = str(checked_project / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        done = tool("ruff", *command, "--config", config, "--no-cache", str(TOOLKIT),
                    cwd=checked_project)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_accepts_the_toolkit(checked_project):
    """As the generated configuration checks the lab's code (Python 3.10, the DataJoint
    stub), in the render's package: its toolkit is the source, byte for byte."""
    done = tool("mypy", "--no-incremental", "src/workflow/toolkit", cwd=checked_project)
    assert done.returncode == 0, done.stdout + done.stderr
