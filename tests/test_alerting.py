"""Alerting files of a render, checked by the tools that read them.

deploy/prometheus/: the rules by `promtool check rules` and their unit tests by `promtool test
rules`, prometheus.yml by `promtool check config`, alertmanager.yml by `amtool check-config`
(Debian's packages prometheus and prometheus-alertmanager; .ci/run installs them). The
PrometheusRule of deploy/k8s/components/alerting must hold the same rules and build into an
overlay that validates; the compose profile "monitoring" must wire the same files. That the
rules name metrics the dashboard exports is checked by the toolkit's tests
(tests/toolkit/test_toolkit_alerts.py), against a real database.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import clean_environment
from test_deploy import COMPOSE

PACKAGE = "alerted"


def tool(name: str, package: str) -> str:
    return shutil.which(name) or pytest.skip(f"{name} is missing: apt-get install {package}")


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module", params=["mysql", "postgresql"])
def project(request, cookies_session) -> Path:
    result = cookies_session.bake(
        extra_context={"database_backend": request.param, "package_name": PACKAGE}
    )
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def test_rules_pass_promtool_and_their_unit_tests(project):
    promtool = tool("promtool", "prometheus")
    folder = project / "deploy" / "prometheus"
    for command in (
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        result = run(promtool, *command, cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        test["alertname"]
        for group in yaml.safe_load((folder / "rules.test.yml").read_text())["tests"]
        for test in group["alert_rule_test"]
        if test.get("exp_alerts")
    }
    rules = yaml.safe_load((folder / "rules.yml").read_text())["groups"]
    assert tested == {rule["alert"] for group in rules for rule in group["rules"]}
    assert f"python -m {PACKAGE} " in (folder / "rules.yml").read_text()


def test_alertmanager_example_passes_amtool(project):
    amtool = tool("amtool", "prometheus-alertmanager")
    folder = project / "deploy" / "prometheus"
    result = run(amtool, "check-config", "alertmanager.yml", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "password:" not in (folder / "alertmanager.yml").read_text()  # secrets are files


def test_kubernetes_rules_are_the_rules_and_build_into_an_overlay(project, tmp_path):
    rules = yaml.safe_load((project / "deploy/prometheus/rules.yml").read_text())
    component = project / "deploy/k8s/components/alerting"
    rule = yaml.safe_load((component / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rules["groups"]

    # The production overlay with the component added, as the component's comment says.
    overlay = project / "deploy/k8s/overlays/prod-alerting"
    shutil.copytree(project / "deploy/k8s/overlays/prod", overlay)
    try:
        with (overlay / "kustomization.yaml").open("a") as kustomization:
            kustomization.write("components:\n  - ../../components/alerting\n")
        kubectl = shutil.which("kubectl") or pytest.fail("kubectl is missing (/usr/bin/kubectl)")
        built = run(
            kubectl,
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(overlay),
            cwd=project,
        )
    finally:
        shutil.rmtree(overlay)
    assert built.returncode == 0, built.stderr
    (tmp_path / "built.yaml").write_text(built.stdout)
    validate = shutil.which("kubernetes-validate") or pytest.fail("kubernetes-validate is missing")
    result = run(validate, "--strict", "--quiet", str(tmp_path / "built.yaml"), cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr

    objects = {d["kind"]: d for d in yaml.safe_load_all(built.stdout)}
    (namespace,) = [
        d["metadata"]["name"] for d in yaml.safe_load_all(built.stdout) if d["kind"] == "Namespace"
    ]
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    assert objects["PrometheusRule"]["metadata"]["namespace"] == namespace
    assert monitor["metadata"]["namespace"] == namespace
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert {port["name"] for port in service["spec"]["ports"]} >= {
        endpoint["port"] for endpoint in monitor["spec"]["endpoints"]
    }
    # The base alone never asks for the operator's kinds: clusters without it still apply.
    base = (project / "deploy/k8s/base/kustomization.yaml").read_text()
    assert "alerting" not in base


def test_compose_monitoring_profile_wires_the_same_files(project):
    compose = yaml.safe_load((project / "docker/docker-compose.yaml").read_text())
    services = compose["services"]
    for name in ("dashboard", "prometheus", "alertmanager"):
        assert services[name]["profiles"] == ["monitoring"], name  # only when asked
    for name in ("prometheus", "alertmanager"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith(".."):  # bind mounts, relative to docker/
                assert source.startswith("../.secrets/") or (project / source[3:]).exists(), source
    prometheus = yaml.safe_load((project / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "dashboard"
    command = services["dashboard"]["command"]
    assert command[:4] == ["python", "-m", PACKAGE, "serve"]
    assert command[command.index("--port") + 1] == port
    assert command[command.index("--allow-host") + 1] == host  # Prometheus asks for it by name
    assert "--open-metrics" in command
    (manager,) = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert manager.split(":")[0] == "alertmanager"


@pytest.mark.parametrize("version", COMPOSE)
def test_compose_accepts_the_monitoring_profile(project, version):
    env_file = project / "docker" / ".env"
    shutil.copy(project / "docker" / ".env.example", env_file)
    try:
        result = subprocess.run(
            [
                COMPOSE[version](),
                "-f",
                "docker/docker-compose.yaml",
                "--profile",
                "monitoring",
                "config",
            ],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
            env=clean_environment(),
        )
    finally:
        env_file.unlink()
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"dashboard", "prometheus", "alertmanager", "worker"} <= set(services)
