"""The notebooks run top to bottom against the test database."""

import json
from pathlib import Path

import datajoint as dj
import nbformat
from nbclient import NotebookClient

from {{ cookiecutter.package_name }}.utils import database_environment

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def kernel_settings() -> dict[str, str]:
    """This test run's database, store and schema prefix, for the notebook's kernel."""
    settings = database_environment()
    stores = {name: spec for name, spec in dj.config.stores.items() if name != "default"}
    if stores:
        settings["DJ_STORES"] = json.dumps({"default": dj.config.stores.get("default"), **stores})
    return settings


def test_notebooks_run_in_order(pipeline, monkeypatch):
    """01-data-entry then 02-analysis, top to bottom, in one kernel as a user would run them."""
    for name, value in kernel_settings().items():
        monkeypatch.setenv(name, value)
    notebooks = [nbformat.read(path, as_version=4) for path in NOTEBOOKS]
    cells = [cell for notebook in notebooks for cell in notebook.cells]
    for number, cell in enumerate(cells):
        cell["id"] = f"cell-{number}"  # ids are unique per notebook, not across both
    session = nbformat.v4.new_notebook(cells=cells, metadata=notebooks[0].metadata)
    client = NotebookClient(
        session, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS[0].parent)}}
    )
    client.execute()
    errors = [
        o for cell in session.cells for o in cell.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors


def test_notebooks_are_stored_without_outputs():
    """As nbstripout keeps them: no outputs or execution counts in the repository."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert (cell.outputs, cell.execution_count) == ([], None), path.name
