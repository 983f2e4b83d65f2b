"""Build hook of the dj-pipeline-toolkit wheel and sdist: the template's toolkit folder,
shipped as the import package `dj_pipeline_toolkit`.

Built from the template repository, the files come from the folder the template copies
into every project it makes; built from the sdist, from its `dj_pipeline_toolkit/`.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Loading this file, Python wrote its bytecode beside it (__pycache__/): a build leaves
# nothing in the template's tree.
_bytecode = Path(importlib.util.cache_from_source(__file__))
_bytecode.unlink(missing_ok=True)
with contextlib.suppress(OSError):
    _bytecode.parent.rmdir()  # only when empty

PACKAGE = "dj_pipeline_toolkit"
TEMPLATE_TOOLKIT = Path(
    "..", "{{cookiecutter.project_slug}}", "src", "{{cookiecutter.package_name}}", "toolkit"
)


class ToolkitFolder(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        unpacked = root / PACKAGE  # in an sdist
        source = unpacked if unpacked.is_dir() else (root / TEMPLATE_TOOLKIT).resolve()
        if not (source / "__init__.py").is_file():
            raise FileNotFoundError(f"the toolkit's source is not at {source}")
        # The source and the dashboard's files; not what tools leave beside them (bytecode,
        # __pycache__, hidden caches such as .ruff_cache, editors' backups).
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and shipped(relative):
                build_data["force_include"][str(path)] = f"{PACKAGE}/{relative.as_posix()}"


def shipped(relative: Path) -> bool:
    """Whether a file of the toolkit folder belongs in the wheel."""
    if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
        return False
    if relative.parts[0] == "dashboard_files":
        return True
    return len(relative.parts) == 1 and relative.suffix == ".py"
