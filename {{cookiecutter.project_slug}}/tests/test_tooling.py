"""One version of each tool, kept in places Dependabot updates (.github/dependabot.yml).

The hooks in .pre-commit-config.yaml are local hooks that install their tools from
PyPI, which Dependabot's pre-commit ecosystem does not update: every version a hook pins
is pinned in pyproject.toml's dev extra too, where Dependabot does, and the two must
agree (so `pre-commit run` and `uv run ruff`/`uv run mypy` agree as well). Likewise the
CI jobs' database images: Dependabot does not read a workflow's `services:`, so they are
listed in .github/docker-compose.ci.yaml, which it updates, and ci.yml must match it.
"""

import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
# An image pinned to one release: a tag with a full version, and maybe a digest.
PINNED_IMAGE = re.compile(r"^[\w./-]+:\d+\.\d+(\.\d+)?(@sha256:[0-9a-f]{64})?$")


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
        # The versions agree; pyproject.toml may leave a tool out on older Pythons.
        assert requirement.specifier == expected.specifier, (
            f"hook {hook}: {requirement} differs from pyproject.toml's {expected}"
        )


def test_every_version_a_hook_pins_is_one_dependabot_updates():
    requirements = project_requirements()
    for hook, requirement in hook_requirements():
        if str(requirement.specifier).startswith("=="):
            assert requirement.name in requirements, (
                f"hook {hook}: {requirement} is pinned only in .pre-commit-config.yaml; "
                "pin it in pyproject.toml's dev extra too"
            )


def test_the_linters_are_pinned():
    requirements = project_requirements()
    for name in ("ruff", "mypy", "codespell", "zizmor", "nbstripout", "pre-commit-hooks"):
        assert str(requirements[name].specifier).startswith("=="), requirements[name]


def service_images(path: Path) -> dict[str, str]:
    """The image of each service of a compose file, or of each job's services in a workflow."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "jobs" not in spec:
        return {name: service["image"] for name, service in spec["services"].items()}
    return {
        name: service["image"]
        for job in spec["jobs"].values()
        for name, service in job.get("services", {}).items()
    }


def test_ci_tests_against_the_database_images_dependabot_updates():
    workflow = service_images(ROOT / ".github" / "workflows" / "ci.yml")
    listed = service_images(ROOT / ".github" / "docker-compose.ci.yaml")
    assert workflow == listed
    for name, image in listed.items():
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not pinned to one release"
