"""One version of each tool: pre-commit's hooks install what pyproject.toml asks for.

The hooks in .pre-commit-config.yaml install their tools from PyPI. Where a hook
installs a package that pyproject.toml also requires (the pinned ruff, mypy and
codespell of the dev extra, the libraries mypy reads types from), the two must ask
for the same versions, so `pre-commit run` and `uv run ruff`/`uv run mypy` agree.
"""

from pathlib import Path

import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


def project_requirements() -> dict[str, Requirement]:
    """The project's dependencies and its dev extra, by package name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return {requirement.name: requirement for requirement in map(Requirement, listed)}


def hook_requirements() -> list[tuple[str, Requirement]]:
    """Every additional dependency of every hook, with the hook's id."""
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    return [
        (hook["id"], Requirement(dependency))
        for repo in config["repos"]
        for hook in repo["hooks"]
        for dependency in hook.get("additional_dependencies", [])
    ]


def test_hooks_install_the_versions_pyproject_asks_for():
    requirements = project_requirements()
    shared = [(hook, req) for hook, req in hook_requirements() if req.name in requirements]
    assert {req.name for _, req in shared} >= {"ruff", "mypy", "codespell"}
    for hook, requirement in shared:
        expected = requirements[requirement.name]
        assert (requirement.specifier, requirement.marker) == (
            expected.specifier,
            expected.marker,
        ), f"hook {hook}: {requirement} differs from pyproject.toml's {expected}"


def test_the_linters_are_pinned():
    requirements = project_requirements()
    for name in ("ruff", "mypy", "codespell"):
        assert str(requirements[name].specifier).startswith("=="), requirements[name]
