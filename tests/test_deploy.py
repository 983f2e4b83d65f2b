"""Deployment files: hadolint, the Compose specification, shellcheck, and their consistency.

Docker is not available here, so the files are checked statically: the linters and
schemas they must satisfy, and that the compose file, its .env.example, datajoint.json and
the package agree with one another.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMBINATIONS = [
    {"database_backend": backend, "object_store": store}
    for backend in ("mysql", "postgresql")
    for store in ("file", "s3", "none")
]
# Variables the worker's environment may set: DataJoint's own, and the package's prefix switch.
DATAJOINT_VARIABLES = {"DJ_HOST", "DJ_PORT", "DJ_BACKEND", "DJ_USER", "DJ_PASS", "DJ_STORES"}


def tool(name: str) -> str:
    return shutil.which(name) or pytest.fail(f"{name} is missing: uv run --extra test installs it")


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture(params=COMBINATIONS, ids=lambda c: "-".join(c.values()))
def project(request, cookies) -> Path:
    result = cookies.bake(extra_context=request.param)
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def test_dockerfile_passes_hadolint(project):
    result = run(tool("hadolint"), "--failure-threshold", "info", "docker/Dockerfile", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_follows_the_compose_specification(project):
    check = tool("check-jsonschema")
    result = run(
        check, "--builtin-schema", "vendor.compose-spec", "docker/docker-compose.yaml", cwd=project
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_slurm_script_passes_shellcheck(project):
    result = run(tool("shellcheck"), "deploy/slurm-workers.sh", cwd=project)
    assert result.returncode == 0, result.stdout
    assert (project / "deploy" / "slurm-workers.sh").stat().st_mode & 0o111


def test_compose_agrees_with_the_project(project):
    compose = yaml.safe_load((project / "docker" / "docker-compose.yaml").read_text())
    config = json.loads((project / "datajoint.json").read_text())
    services = compose["services"]
    worker = services["worker"]
    environment = worker["environment"]
    prefix_variable = next(name for name in environment if name.endswith("_SCHEMA_PREFIX"))
    package = prefix_variable.removesuffix("_SCHEMA_PREFIX").lower()

    # DataJoint's variables only, pointing at the compose database on the backend's port.
    assert set(environment) - {prefix_variable} <= DATAJOINT_VARIABLES
    assert environment["DJ_HOST"] == "db"
    assert environment["DJ_BACKEND"] == config["database"]["backend"]
    assert int(environment["DJ_PORT"]) == config["database"]["port"]
    image = services["db"]["image"]
    assert image.startswith(
        {"mysql": "mysql:", "postgresql": "postgres:"}[config["database"]["backend"]]
    )
    assert any(port.endswith(f":{config['database']['port']}") for port in services["db"]["ports"])
    assert "healthcheck" in services["db"]
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert "container_name" not in worker and "ports" not in worker  # scalable: --scale worker=N

    # The store: MinIO with the bucket of datajoint.json when it is S3.
    store = config.get("stores", {}).get("main", {})
    if store.get("protocol") == "s3":
        stores = json.loads(re.sub(r"\$\{(\w+)\}", r"\1", environment["DJ_STORES"]))
        assert (
            stores["main"]["bucket"] == store["bucket"]
            and stores["main"]["endpoint"] == "minio:9000"
        )
        assert store["bucket"] in " ".join(services["create-bucket"]["command"])
        assert (
            worker["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
        )
    else:
        assert "minio" not in services and "DJ_STORES" not in environment

    # The command runs the package's worker module.
    dockerfile = (project / "docker" / "Dockerfile").read_text()
    assert f'CMD ["python", "-m", "{package}.worker"' in dockerfile
    assert (project / "src" / package / "worker.py").is_file()
    assert re.search(r"^USER \d+$", dockerfile, flags=re.MULTILINE)  # not root


def test_credentials_come_from_the_env_file_only(project):
    compose_text = (project / "docker" / "docker-compose.yaml").read_text()
    example = (project / "docker" / ".env.example").read_text()
    defined = dict(re.findall(r"^(\w+)=(.*)$", example, flags=re.MULTILINE))
    required = set(re.findall(r"\$\{(\w+):\?", compose_text))
    assert required <= set(defined), f"not in .env.example: {required - set(defined)}"
    for name, value in defined.items():
        if "PASS" in name or name == "MINIO_ROOT_USER":
            assert value == "change-me", f"{name} must be a placeholder"
    assert "docker/.env" in (project / ".gitignore").read_text().splitlines()
    ignored = (project / ".dockerignore").read_text().splitlines()
    assert ".secrets/" in ignored and ".env" in ignored
    assert "COPY .secrets" not in (project / "docker" / "Dockerfile").read_text()
