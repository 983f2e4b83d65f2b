"""Every bench script runs, at a tiny size, so none can rot.

Each script in bench/ (but bench/_common.py, what they share) takes --tiny, exits 0 and
ends with its `ratio ...: <value / goal> (...) PASS|MISS` line; whether it passes its goal
is the bench's business, measured on a quiet machine, not this suite's. The scripts that
touch a lab's data run as a lab member's account (a password, rights on its own prefix
only); worker_faults.py makes its accounts itself, as the servers' administrator. A test
lists bench/*.py and fails for a script that has no case here. The scripts install into
the suite's shared environment (--venv), each under a package name of its own, but
render_install.py, whose phases are a new environment's.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys

import pytest
from conftest import TEMPLATE, Credentials, clean_environment

pytestmark = pytest.mark.slow
# Long and independent tests (each renders and installs its own project): spread them.
SPREAD_OVER_WORKERS = True

BENCH = TEMPLATE / "bench"
RATIO = re.compile(r"^ratio (?P<name>.+): (?P<share>\d+\.\d+) \(.+\) (PASS|MISS)$", re.MULTILINE)


def lab_settings(lab: Credentials, tag: str) -> tuple[dict[str, str], str]:
    """The account's DJ_* settings, and a fresh prefix of its own."""
    return dict(lab.env), f"{lab.prefix}{tag}{secrets.token_hex(2)}_"


def generated_suite(lab: Credentials) -> tuple[list[str], dict[str, str], list[str]]:
    answers = ["--answers", "package_name=benchsuite", "project_name=Bench Suite"]
    return answers, {}, ["ratio warm generated suite / goal: ", "cold: ", "warm 1: "]


def render_install(lab: Credentials):
    return [], {}, ["ratio render to green suite / goal: ", 'uv pip install -e ".[dev]"']


def render(lab: Credentials):
    return [], {}, ["ratio default render / one-file render: ", "ratio 10-schema render"]


def workers(lab: Credentials):
    env, prefix = lab_settings(lab, "bw")
    expected = ["8 keys, make() waits 0 ms, mysql", "worker overhead per key beyond make()"]
    return ["--settings", json.dumps(env), "--prefix", prefix], {}, [*expected, "ratio speed-up"]


def worker_faults(lab: Credentials):
    # As the servers' administrator (root, postgres): the trials make accounts of their own.
    expected = ["ratio faults per trial", "\nmysql ", "\npostgresql "]
    return ["--deadline", "90"], {}, expected


def backup(lab: Credentials):
    env, prefix = lab_settings(lab, "kb")
    expected = ["incomplete archives accepted by restore: 0", "peak memory ratio"]
    return ["--prefix", prefix], env, [*expected, "ratio restore peak memory"]


def scrape(lab: Credentials):
    env, prefix = lab_settings(lab, "bs")
    return ["--prefix", prefix], env, ["queries per scrape", "ratio a reading / a scrape"]


#: Each bench script: its arguments beyond --tiny, its DJ_* settings and what it must print.
CASES = {
    "generated_suite.py": generated_suite,
    "render_install.py": render_install,
    "render.py": render,
    "workers.py": workers,
    "worker_faults.py": worker_faults,
    "backup.py": backup,
    "scrape.py": scrape,
}


def test_every_bench_script_has_a_case():
    scripts = {path.name for path in BENCH.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(CASES), f"bench scripts without a case here: {scripts - set(CASES)}"


@pytest.mark.parametrize("script", sorted(CASES))
def test_the_bench_script_runs_at_a_tiny_size(script, mariadb_lab, project_env):
    arguments, settings, expected = CASES[script](mariadb_lab)
    if script not in ("render.py", "render_install.py"):
        arguments = ["--venv", str(project_env), *arguments]
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--tiny", *arguments],
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert RATIO.search(done.stdout), done.stdout
    for text in expected:
        assert text in done.stdout, (text, done.stdout)
    lines = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    if script == "scrape.py":  # the dashboard's promise: scrapes send no query
        assert lines["queries per scrape"].endswith("PASS"), done.stdout
        if shutil.which("promtool"):
            assert lines["promtool check metrics"].endswith("PASS"), done.stdout
