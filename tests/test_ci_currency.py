"""CI is current from day one: the template's workflow and the one it generates use every
action at or above the majors of MINIMUM_MAJORS, and database servers at or above
MINIMUM_IMAGES, each pinned to one release.

These tables are the one place to raise when a major comes out (tests/test_standards.py
reads MINIMUM_MAJORS too). The template's own workflow is kept current by Dependabot, the
generated one is a Jinja file Dependabot cannot parse: an action both use must be at the
same version in both, so a Dependabot update of the template's workflow fails this test
until the generated workflow follows. A render then keeps itself current: its
dependabot.yml covers the actions, the pinned Python tools (the pre-commit hooks' ones via
the dev extra) and every image (the CI servers via .github/docker-compose.ci.yaml);
tests/test_standards.py checks on renders that the copies are equal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE
from cookiecutter.main import cookiecutter

# Current majors, December 2026 (each a release of the action's own repository):
# checkout v7 (7.0.1, July 2026), setup-python v7 (July 2026), cache v6 (6.1.0),
# upload-pages-artifact and deploy-pages v5, setup-uv v10 (10.1.0, September 2026; since v8
# setup-uv publishes no major tags, so it is pinned to a release).
MINIMUM_MAJORS = {
    "actions/checkout": 7,
    "actions/setup-python": 7,
    "astral-sh/setup-uv": 10,
    "actions/cache": 6,
    "actions/upload-pages-artifact": 5,
    "actions/deploy-pages": 5,
    # the template's release of the toolkit wheel (.github/workflows/release-toolkit.yml):
    # upload-artifact v7, download-artifact v8, gh-action-pypi-publish v1 (1.14.2)
    "actions/upload-artifact": 7,
    "actions/download-artifact": 8,
    "pypa/gh-action-pypi-publish": 1,
}
# Database servers: MySQL's LTS (8.0 reached its end of life in April 2026), PostgreSQL's
# newest major, MariaDB's LTS of Debian 12 (the servers the template's tests are written on).
MINIMUM_IMAGES = {"mysql": (8, 4), "postgres": (18, 0), "mariadb": (10, 11)}
IMAGE = re.compile(r"^(?P<name>[\w./-]+):(?P<version>\d+\.\d+(\.\d+)?)(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    return Path(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(tmp_path_factory.mktemp("ci")))
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def workflows(rendered: Path) -> dict[str, dict]:
    return {
        "template": load(TEMPLATE / ".github" / "workflows" / "ci.yml"),
        "generated": load(rendered / ".github" / "workflows" / "ci.yml"),
    }


def actions(workflow: dict) -> dict[str, set[str]]:
    """Each action the workflow uses, with the refs it uses it at."""
    used: dict[str, set[str]] = {}
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                used.setdefault(action, set()).add(ref)
    return used


def images(workflow: dict) -> dict[str, set[str]]:
    """Each service name of the workflow, with the images it runs."""
    found: dict[str, set[str]] = {}
    for job in workflow["jobs"].values():
        for name, service in job.get("services", {}).items():
            found.setdefault(name, set()).add(service["image"])
    return found


def test_every_action_is_on_a_current_major(rendered):
    for which, workflow in workflows(rendered).items():
        for action, refs in actions(workflow).items():
            assert action in MINIMUM_MAJORS, f"{which}: {action} has no row in MINIMUM_MAJORS"
            (ref,) = refs  # one version of an action per workflow
            major = re.fullmatch(r"v(\d+)(\.\d+\.\d+)?", ref)
            assert major, f"{which}: {action}@{ref} is not a release tag"
            assert int(major[1]) >= MINIMUM_MAJORS[action], f"{which}: {action}@{ref} is behind"


def test_the_generated_workflow_follows_the_template_workflow(rendered):
    """Dependabot updates the template's workflow; the generated one must move with it."""
    template, generated = (actions(w) for w in workflows(rendered).values())
    for action in template.keys() & generated.keys():
        assert generated[action] == template[action], action


def test_database_images_are_current_and_pinned(rendered):
    for which, workflow in workflows(rendered).items():
        for service, found in images(workflow).items():
            for image in found:
                pinned = IMAGE.match(image)
                assert pinned, f"{which}: {service} runs {image}, not one pinned release"
                name = pinned["name"].rsplit("/", 1)[-1]
                version = tuple(int(part) for part in pinned["version"].split(".")[:2])
                assert version >= MINIMUM_IMAGES[name], f"{which}: {image} is behind"
    # The template's smoke job tests renders on the servers their own CI uses.
    template, generated = (images(w) for w in workflows(rendered).values())
    for service in generated:
        assert template[service] == generated[service], service


def test_dependabot_updates_every_pinned_thing_of_a_render(rendered):
    config = load(rendered / ".github" / "dependabot.yml")
    ecosystems: dict[str, set[str]] = {}
    for entry in config["updates"]:
        directories = entry.get("directories", [entry.get("directory")])
        ecosystems.setdefault(entry["package-ecosystem"], set()).update(directories)
    assert ecosystems == {
        "github-actions": {"/"},
        "pip": {"/"},  # the dependencies, and the pre-commit hooks' tools (dev extra)
        "docker": {"/docker"},
        "docker-compose": {"/docker", "/.github"},  # the deployment's and the CI's servers
    }
    ci_servers = load(rendered / ".github" / "docker-compose.ci.yaml")["services"]
    assert {service["image"] for service in ci_servers.values()} == {
        image for found in images(workflows(rendered)["generated"]).values() for image in found
    }


def test_dependabot_updates_the_template_workflow():
    """The trigger of test_the_generated_workflow_follows_the_template_workflow."""
    config = load(TEMPLATE / ".github" / "dependabot.yml")
    assert {"package-ecosystem": "github-actions", "directory": "/"}.items() <= next(
        entry for entry in config["updates"] if entry["package-ecosystem"] == "github-actions"
    ).items()
