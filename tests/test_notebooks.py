"""A rendered project's notebooks run top to bottom against a test database, and are stored
without outputs.

The notebooks are the lab's first contact with the pipeline: 01-data-entry activates it
(`from <package> import pipeline`), enters the sample rows of tests/sample_data.py, and
02-analysis populates and reads the results. They run here as a lab member runs them: in
the rendered project's installed environment (its own ipykernel, started by nbclient), one
kernel for both, with a least-privileged account's settings and a throwaway prefix of its
own, in the project's notebooks/ folder.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import clean_environment, installs_on_first_use, leftover_schemas

pytestmark = pytest.mark.slow

CASES = {
    # The default pipeline on MariaDB, its objects in a file store.
    "mariadb": {"package_name": "nbdefault", "project_name": "Notebooks Default"},
    # PostgreSQL, no store, and a pipeline of manual tables only (02-analysis then shows
    # the last manual table).
    "postgresql": {
        "package_name": "nbcolony",
        "project_name": "Notebooks Colony",
        "database_backend": "postgresql",
        "object_store": "none",
        "schemas": "colony; visit [acquisition] <- colony",
    },
}

# Run by the project's Python: both notebooks in one kernel, then the schemas dropped.
RUNNER = """\
import json, sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

folder, report = Path(sys.argv[1]), Path(sys.argv[2])
notebooks = [nbformat.read(path, as_version=4) for path in sorted(folder.glob("*.ipynb"))]
cells = [cell for notebook in notebooks for cell in notebook.cells]
for number, cell in enumerate(cells):
    cell["id"] = f"cell-{number}"  # ids are unique per notebook, not across both
session = nbformat.v4.new_notebook(cells=cells, metadata=notebooks[0].metadata)
client = NotebookClient(session, timeout=300, resources={"metadata": {"path": str(folder)}})
try:
    client.execute()
finally:
    outputs = [
        {"source": cell.source, "outputs": cell.get("outputs", [])}
        for cell in session.cells
        if cell.cell_type == "code"
    ]
    report.write_text(json.dumps(outputs, default=str), encoding="utf-8")
"""

DROP = """\
from {package} import pipeline
pipeline.activate(create=False)
for module in reversed(pipeline.modules):
    if module.schema.is_activated():
        module.schema.drop(prompt=False)
"""


@pytest.fixture(scope="module")
def rendered(cookies_session, project_env):
    """backend -> the rendered project of that case, installed with its dev extra."""
    return installs_on_first_use(cookies_session, project_env, CASES)


@pytest.mark.parametrize("backend", list(CASES))
def test_notebooks_run_in_order(rendered, project_env, lab_accounts, tmp_path, backend):
    """01-data-entry then 02-analysis, top to bottom, in one kernel as a user runs them."""
    project = rendered(backend)
    package = CASES[backend]["package_name"]
    account = lab_accounts[backend]
    prefix = f"{account.prefix}nb{secrets.token_hex(3)}_"
    settings = {**account.env, f"{package.upper()}_SCHEMA_PREFIX": prefix}
    if CASES[backend].get("object_store", "file") == "file":
        store = {"protocol": "file", "location": str(tmp_path / "store")}
        settings["DJ_STORES"] = json.dumps({"default": "main", "main": store})
    env = clean_environment(**settings)
    python = str(project_env / "bin" / "python")
    runner, report = tmp_path / "run_notebooks.py", tmp_path / "outputs.json"
    runner.write_text(RUNNER, encoding="utf-8")
    database = account.env.get("DJ_DATABASE_NAME")

    def ours() -> list[str]:
        return [name for name in leftover_schemas(account, database) if name.startswith(prefix)]

    try:
        result = subprocess.run(
            [python, str(runner), str(project / "notebooks"), str(report)],
            cwd=project / "notebooks",
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    finally:
        subprocess.run([python, "-c", DROP.format(package=package)], cwd=project, env=env,
                       capture_output=True, check=False, timeout=300)  # fmt: skip
    cells = json.loads(report.read_text(encoding="utf-8"))
    errors = [o for cell in cells for o in cell["outputs"] if o["output_type"] == "error"]
    assert not errors, errors
    printed = "".join("".join(o.get("text", "")) for cell in cells for o in cell["outputs"])
    assert f"{prefix!r}: the personal schemas" in printed
    if backend == "mariadb":  # the default pipeline's computed tables are all done
        done = re.search(r"MultiModalAnalysis: (\d+) of \1 done", printed)
        assert done and int(done[1]) > 0, printed[-2000:]
    assert ours() == []
    assert not list((project / "notebooks").glob("*.ipynb_checkpoints"))


def test_notebooks_are_stored_without_outputs(cookies):
    """As nbstripout keeps them: no outputs or execution counts in the repository."""
    project = Path(cookies.bake().project_path)
    notebooks = sorted((project / "notebooks").glob("*.ipynb"))
    assert [path.name for path in notebooks] == ["01-data-entry.ipynb", "02-analysis.ipynb"]
    for path in notebooks:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                assert (cell["outputs"], cell["execution_count"]) == ([], None), path.name
