"""Write one module per schema from the plan pre_gen_project validated.

Cookiecutter renders this script with Jinja before running it, in the new
project's directory; only RENDERED_CONTEXT is filled in that way. The module
writer is the toolkit's scaffold.py, so a project can add schemas later with
the same code that wrote its first ones.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

RENDERED_CONTEXT = r"""{{ cookiecutter | tojson }}"""
PLAN_FILE = Path(".pipeline-plan.json")  # written by pre_gen_project


def load_scaffold(package: str):
    """Import the generated package's scaffold module without importing the package.

    No .pyc is written: a fresh project holds no build output.
    """
    sys.dont_write_bytecode = True
    path = Path("src", package, "toolkit", "scaffold.py")
    spec = importlib.util.spec_from_file_location("scaffold", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def writer_settings(context: dict) -> dict:
    """What the module writer (scaffold.write_pipeline) takes from the answers."""
    return {
        "blob": context["__blob"],
        "name": context["project_name"],
        "production_prefix": context["schema_prefix"],
        "settings_prefix": context["__prefix_variable"].removesuffix("_SCHEMA_PREFIX"),
    }


def write_schema_modules(context: dict) -> None:
    """One module and one test per schema, plus the pipeline files that list them."""
    plan = json.loads(PLAN_FILE.read_text(encoding="utf-8"))
    PLAN_FILE.unlink()
    package = context["package_name"]
    load_scaffold(package).write_pipeline(Path.cwd(), package, plan, **writer_settings(context))


def protect_secrets(folder: Path = Path(".secrets")) -> None:
    """Credentials are for the owner alone: the folder 0700, its files 0600."""
    folder.chmod(0o700)
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600)


def drop_bytecode(package: str) -> None:
    """A fresh project holds no build output: cookiecutter copies the toolkit folder as it
    is, bytecode too when the template's own tests have just imported it."""
    import shutil

    for cache in sorted(Path("src", package, "toolkit").rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)


def main() -> None:
    context = json.loads(RENDERED_CONTEXT)
    drop_bytecode(context["package_name"])
    write_schema_modules(context)
    protect_secrets()


if __name__ == "__main__":
    main()
