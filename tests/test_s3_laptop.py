"""An s3 render's laptop steps work as its README writes them.

The README's "On a laptop without a database server" steps, run in order on an s3 render:
the dev-db, the development prefix in .env, the object store pointed at a folder with the
README's own `export DJ_STORES=...` line (the laptop has no credentials for the lab's
bucket), then the notebooks as `jupyter nbconvert --execute` runs them: each on its own,
in its folder, with the shell's environment.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_environment, install
from cookiecutter.main import cookiecutter

pytestmark = pytest.mark.slow

PACKAGE = "lap"
# `jupyter nbconvert --to notebook --execute notebooks/*.ipynb`, without nbconvert itself.
RUN_NOTEBOOKS = """\
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

for path in sorted(Path("notebooks").glob("*.ipynb")):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, resources={"metadata": {"path": "notebooks"}})
    try:
        client.execute()
    except CellExecutionError as error:
        sys.exit(f"{path.name}: {error}")
    print(path.name, "ran")
"""


def laptop_steps(readme: str) -> tuple[str, dict[str, str]]:
    """The .env line of step 3 and the store settings the laptop section gives for a folder."""
    section = readme.split("## On a laptop without a database server", 1)[1].split("\n## ", 1)[0]
    dotenv = re.search(r"`echo (\w+=\w+) > \.env`", section)
    stores = re.findall(r"^\s*export DJ_STORES='(.+)'$", section, flags=re.MULTILINE)
    assert dotenv and stores, "the laptop steps no longer say how to set up .env and the store"
    folder = [
        json.loads(value) for value in stores if json.loads(value)["main"]["protocol"] == "file"
    ]
    assert folder, "no DJ_STORES line puts the store in a folder"
    return dotenv[1], {"DJ_STORES": json.dumps(folder[0])}


def test_the_readme_laptop_steps_run_the_notebooks_of_an_s3_render(project_env):
    # Outside pytest's temporary root, for the same reason as conftest.project_env (the
    # dev-db's server runs as an unprivileged user when we are root).
    folder = Path(tempfile.mkdtemp(prefix="dj-template-s3-laptop-"))
    project = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"object_store": "s3", "package_name": PACKAGE},
            output_dir=str(folder),
        )
    )
    install(project_env, project)
    dotenv, store = laptop_steps((project / "README.md").read_text(encoding="utf-8"))
    (project / ".env").write_text(dotenv + "\n")
    env = clean_environment(**store)  # no database user: the dev-db is used
    python = str(project_env / "bin" / "python")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, *args], cwd=project, env=env, capture_output=True, text=True, check=False
        )

    outputs = []
    try:
        for step in (
            ["-m", PACKAGE, "dev-db", "start"],
            ["-m", PACKAGE, "declare"],
            ["-c", RUN_NOTEBOOKS],
            ["-m", PACKAGE, "status"],
        ):
            done = run(*step)
            assert done.returncode == 0, f"{step}: {(done.stdout + done.stderr)[-3000:]}"
            outputs.append(done.stdout)
    finally:
        run("-m", PACKAGE, "dev-db", "stop")
        location = project / json.loads(store["DJ_STORES"])["main"]["location"]
        objects = [path for path in location.rglob("*") if path.is_file()]
        shutil.rmtree(folder, ignore_errors=True)
    assert outputs[2].split() == ["01-data-entry.ipynb", "ran", "02-analysis.ipynb", "ran"]
    assert objects, "no object in the folder store"


def test_the_folder_is_kept_out_of_git(tmp_path):
    project = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"object_store": "s3"},
            output_dir=str(tmp_path),
        )
    )
    _, store = laptop_steps((project / "README.md").read_text(encoding="utf-8"))
    location = json.loads(store["DJ_STORES"])["main"]["location"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"{location}/_hash/x"], cwd=project, check=False
    )
    assert ignored.returncode == 0, f"{location} is not gitignored"
