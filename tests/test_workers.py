"""Worker processes of a generated project, against MariaDB and PostgreSQL.

Several `python -m <package>.worker` processes share one database: every key is made
exactly once, a failing make() leaves an error record while the rest completes, SIGTERM
stops a worker cleanly, and after SIGKILL another worker completes the pipeline once the
orphaned reservation is released, as the generated README documents. Faults at random
moments -- killed sessions, stop signals, killed children of --processes -- run as
bench/worker_faults.py does, at a small size (tests/test_bench.py runs bench/workers.py).

Every test uses a password-protected account with rights on its own prefix only.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import LAB_PASSWORD, TEMPLATE, clean_environment, install, load_module

pytestmark = pytest.mark.slow
# Long and independent tests: the workers share them (see conftest.py).
SPREAD_OVER_WORKERS = True

PACKAGE = "wk"
KEYS = 40
FAILING = 7

# What the bench scripts share (first: worker_faults.py imports it): the Work schema, whose
# make() logs its start and end, and how it is added to a render.
COMMON = load_module(TEMPLATE / "bench" / "_common.py")
FAULTS_BENCH = TEMPLATE / "bench" / "worker_faults.py"


@pytest.fixture(scope="module")
def worker_project(cookies_session, project_env):
    result = cookies_session.bake(
        extra_context={"package_name": PACKAGE, "project_name": "Workers"}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    install(project_env, project)
    python = str(project_env / "bin" / "python")
    COMMON.add_schema(project, python, PACKAGE, "work", COMMON.WORK_MODULE)
    return project


@pytest.fixture(params=["mariadb", "postgresql"])
def pipeline_env(request, worker_project, project_env, lab_accounts, tmp_path):
    """Environment of one test: a backend, a fresh schema prefix, KEYS subjects entered."""
    lab = lab_accounts[request.param]
    env = clean_environment(
        **lab.env,
        WK_SCHEMA_PREFIX=f"{lab.prefix}w{secrets.token_hex(3)}_",
        WORK_LOG=str(tmp_path / "calls.log"),
        WORK_FAIL=str(FAILING),
        PYTHONUNBUFFERED="1",
    )
    python = str(project_env / "bin" / "python")

    def run_python(code: str) -> str:
        done = subprocess.run(
            [python, "-c", code],
            cwd=worker_project,
            env=env,
            capture_output=True,
            check=False,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return (
            done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        )  # DataJoint greets first

    run_python(
        f"import {PACKAGE}; from {PACKAGE} import subject; {PACKAGE}.activate(); "
        f"subject.Subject.insert([(i, f's{{i}}') for i in range(1, {KEYS + 1})]); "
        f"from {PACKAGE} import work; work.Work.jobs.refresh()"
    )
    yield {
        "env": env,
        "python": python,
        "project": worker_project,
        "run": run_python,
        "log": tmp_path / "calls.log",
    }
    run_python(
        f"import {PACKAGE}; {PACKAGE}.activate()\n"
        f"for m in reversed({PACKAGE}.MODULES): m.schema.drop(prompt=False)"
    )


def start_worker(setup, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [setup["python"], "-m", f"{PACKAGE}.worker", "--schema", "work", *args],
        cwd=setup["project"],
        env={**setup["env"], **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def state(setup) -> dict:
    """The Work table's job counts and the keys made so far (one process start)."""
    code = (
        f"import json, {PACKAGE}; {PACKAGE}.activate(); from {PACKAGE}.work import Work; "
        "print(json.dumps({'jobs': Work.jobs.progress(), "
        "'made': sorted(r['subject_id'] for r in Work().to_dicts())}))"
    )
    return json.loads(setup["run"](code))


def calls(setup) -> Counter:
    """How many times make() started, by key."""
    return Counter(COMMON.make_calls(setup["log"]))


def wait_for_a_reservation(setup, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if setup["log"].exists() and setup["log"].read_text():
            return
        time.sleep(0.05)
    raise AssertionError("no worker started a key")


def test_three_workers_make_every_key_exactly_once(pipeline_env):
    workers = [start_worker(pipeline_env) for _ in range(3)]
    codes = [worker.wait(timeout=120) for worker in workers]
    outputs = [worker.stdout.read() for worker in workers]
    assert sorted(codes) == [0, 0, 1], outputs  # only the worker that met the failing key exits 1
    assert all(count == 1 for count in calls(pipeline_env).values())
    assert set(calls(pipeline_env)) == set(range(1, KEYS + 1))
    failing_output = next(out for code, out in zip(codes, outputs, strict=True) if code == 1)
    assert f"ValueError: bad subject {FAILING}" in failing_output
    status = subprocess.run(
        [pipeline_env["python"], "-m", PACKAGE, "status", "--json"],
        cwd=pipeline_env["project"],
        env=pipeline_env["env"],
        capture_output=True,
        check=False,
        text=True,
    )
    assert status.returncode == 1  # a job in error: alerting can key on this
    work = next(row for row in json.loads(status.stdout) if row["table"] == "work.Work")
    assert work["errors"] == 1 and f"bad subject {FAILING}" in work["latest_errors"][0]["message"]
    assert (work["done"], work["remaining"], work["reserved"]) == (KEYS - 1, 1, 0)


def test_sigterm_lets_the_key_in_progress_finish(pipeline_env):
    worker = start_worker(pipeline_env, WORK_SECONDS="1", WORK_FAIL="none")
    wait_for_a_reservation(pipeline_env)
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=30)
    output = worker.stdout.read()
    assert code == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    after = state(pipeline_env)
    assert sorted(calls(pipeline_env)) == after["made"]  # the key in progress was finished
    assert after["jobs"]["reserved"] == 0 and after["jobs"]["error"] == 0
    # Another worker takes the rest.
    finisher = start_worker(pipeline_env, WORK_SECONDS="0", WORK_FAIL="none")
    assert finisher.wait(timeout=120) == 0
    assert state(pipeline_env)["made"] == list(range(1, KEYS + 1))
    assert set(calls(pipeline_env).values()) == {1}


def test_after_sigkill_the_orphaned_key_is_released_and_completed(pipeline_env):
    worker = start_worker(pipeline_env, WORK_SECONDS="3")
    wait_for_a_reservation(pipeline_env)
    worker.kill()
    worker.wait(timeout=30)
    killed_key = next(iter(calls(pipeline_env)))
    after = state(pipeline_env)
    assert killed_key not in after["made"]  # no partial row
    assert after["jobs"]["reserved"] == 1
    # A plain worker leaves the orphan alone; the documented release re-queues it.
    time.sleep(1.2)
    released = subprocess.run(
        [pipeline_env["python"], "-m", PACKAGE, "status", "--release-orphans", "1"],
        cwd=pipeline_env["project"],
        env=pipeline_env["env"],
        capture_output=True,
        check=False,
        text=True,
    )
    assert released.returncode == 0, released.stdout + released.stderr
    finisher = start_worker(pipeline_env, WORK_SECONDS="0")
    assert finisher.wait(timeout=120) == 1
    final = state(pipeline_env)
    assert final["made"] == [k for k in range(1, KEYS + 1) if k != FAILING]
    assert (final["jobs"]["reserved"], final["jobs"]["error"]) == (0, 1)


TRIALS = 20  # per backend: about 15 s each; the bench runs hundreds


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_faults_at_random_moments_lose_no_key(
    backend, worker_project, project_env, lab_accounts, tmp_path
):
    """Killed sessions, stop signals and killed children of --processes at random moments,
    on workers (one process, --processes, --loop) and `populate`: every key made once, or
    pending or in error with a non-zero exit; none left reserved; no hang; the documented
    exit codes; no traceback (bench/worker_faults.py at a small size)."""
    # The trials kill every other session of their account: an account of their own (a
    # password, rights on its prefix only), made by the server's administrator as the bench
    # does, so no other test's session of the lab's account is among them.
    admin = lab_accounts[backend].admin_env
    python = str(project_env / "bin" / "python")
    kind = "postgresql" if backend == "postgresql" else "mysql"
    manage = [python, str(FAULTS_BENCH), "admin", kind, json.dumps(admin)]
    user = f"faults{secrets.token_hex(3)}"
    subprocess.run([*manage, "create", user, LAB_PASSWORD], check=True, capture_output=True)
    settings = {**admin, "DJ_USER": user, "DJ_PASS": LAB_PASSWORD}
    if backend == "postgresql":
        settings["DJ_DATABASE_NAME"] = user
    env = clean_environment(
        **settings, WK_SCHEMA_PREFIX=f"{user}_", WORK_LOG=str(tmp_path / "calls.log")
    )
    seed = secrets.randbelow(10**6)
    command = [python, str(FAULTS_BENCH), "run", PACKAGE]
    # A hang never ends: 90 s after the last fault tells one from a machine under load.
    command += ["--trials", str(TRIALS), "--seed", str(seed), "--deadline", "90"]
    try:
        done = subprocess.run(
            command,
            cwd=worker_project,
            env=env,
            capture_output=True,
            check=False,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run([*manage, "drop", user], check=False, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    counts = result["counts"]
    print(f"seed {seed}, {backend}: {counts} in {result['seconds']:.0f} s")
    failures = {name: counts[name] for name in load_module(FAULTS_BENCH).COUNTS[2:-1]}
    assert not any(failures.values()), (f"seed {seed}", failures, result["failures"])


KILL_CONNECTION = {
    "mariadb": "KILL {}",
    "postgresql": "SELECT pg_terminate_backend({})",
}


def test_a_killed_connection_is_retried_and_the_worker_goes_on(pipeline_env, request):
    """The server drops the worker's connection mid-make(): the worker reconnects,
    retries that key after a backoff and completes every key, exiting 0."""
    backend = request.node.callspec.params["pipeline_env"]
    worker = start_worker(pipeline_env, "--backoff", "0.2", WORK_SECONDS="0.2", WORK_FAIL="none")
    kill = (
        f"import time, {PACKAGE}; {PACKAGE}.activate(); from {PACKAGE}.work import Work\n"
        "while not Work.jobs.reserved: time.sleep(0.02)\n"
        "connection = int(Work.jobs.reserved.to_arrays('connection_id')[0])\n"
        f"Work.connection.query({KILL_CONNECTION[backend]!r}.format(connection))\n"
        "print('killed')"
    )
    assert pipeline_env["run"](kill) == "killed"
    assert worker.wait(timeout=120) == 0, worker.stdout.read()
    output = worker.stdout.read()
    assert "retry 1 of 5" in output or "reconnecting in" in output, output
    assert "Traceback" not in output
    after = state(pipeline_env)
    assert after["made"] == list(range(1, KEYS + 1))
    assert after["jobs"]["total"] == 0
