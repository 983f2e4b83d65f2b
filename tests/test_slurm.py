"""SLURM as a tested engine: deploy/slurm-workers.sh as an array job on a real cluster.

A one-node cluster from Debian's packages (slurm-wlm, munge): munged with a key of its own,
slurmctld and slurmd on localhost with a minimal slurm.conf in a temporary folder. The
generated script runs as written (sbatch --array, overriding only memory and the log path)
against MariaDB, as a lab member with a password and rights on its own prefix only: every
key is made exactly once, `scancel` stops the workers cleanly (exit status 143, no
traceback, no key left reserved) whether they are busy or idle, and a second array job
finishes what the first left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_environment, free_port, install, load_module

pytestmark = pytest.mark.slow

PACKAGE = "sl"
KEYS = 30
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")

# The Work schema of the worker benches and tests: make() logs its start and end, and sleeps
# WORK_SECONDS.
COMMON = load_module(TEMPLATE / "bench" / "_common.py")

SLURM_CONF = """\
ClusterName=djtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# More CPUs than the machine has: the array's workers mostly wait on the database.
SlurmdParameters=config_overrides
KillWait=30
MinJobAge=600
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def slurm_programs() -> None:
    """Debian's slurm-wlm and munge, installed (apt-get) where missing; else skip."""
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster of its own needs root (slurmd runs the jobs)")
    if not all(shutil.which(name) for name in PROGRAMS) and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["update", "-qq"],
            ["install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"],
        ):
            subprocess.run(["apt-get", *command], env=env, capture_output=True, check=False)
    missing = [name for name in PROGRAMS if not shutil.which(name)]
    if missing:
        pytest.skip(f"SLURM cannot be installed here (apt-get slurm-wlm munge): no {missing[0]}")


@pytest.fixture(scope="module")
def cluster():
    """munged, slurmctld and slurmd, each in the foreground, all files in one folder."""
    slurm_programs()
    folder = Path(tempfile.mkdtemp(prefix="djslurm-"))  # short: the munge socket's path
    for sub in ("state", "spool", "logs"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=socket.gethostname().split(".")[0],
            ctld_port=free_port(),
            slurmd_port=free_port(),
            folder=folder,
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    munged = ["munged", "--foreground", "--force", f"--socket={folder}/munge.socket",
              f"--key-file={key}", f"--log-file={folder}/munged.log",
              f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed"]  # fmt: skip
    daemons = [subprocess.Popen(munged, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 10
        while not (folder / "munge.socket").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(conf)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = slurm("sinfo", "-h", "-o", "%t", env=env, check=False)
            if state.returncode == 0 and state.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            log = (folder / "slurmctld.log").read_text(errors="replace").strip().splitlines()
            pytest.skip(f"SLURM did not start here: {log[-1] if log else 'no slurmctld log'}")
        yield {"env": env, "folder": folder}
    finally:
        slurm("scancel", "--user=root", env=env, check=False)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(folder, ignore_errors=True)


def slurm(
    *command: str, env: dict[str, str], check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if check:
        assert done.returncode == 0, f"{command}: {done.stderr}"
    return done


@pytest.fixture(scope="module")
def lab(cluster, cookies_session, project_env, mariadb_lab, tmp_path_factory):
    """A render whose production prefix is the lab member's, declared, with KEYS subjects."""
    production = f"{mariadb_lab.prefix}slurm_"
    result = cookies_session.bake(
        extra_context={
            "package_name": PACKAGE,
            "project_name": "Slurm Lab",
            "schemas": "subject; work <- subject",
            "schema_prefix": production,
        }
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    (project / "src" / PACKAGE / "work.py").write_text(COMMON.WORK_MODULE)
    install(project_env, project)
    logs = tmp_path_factory.mktemp("slurm-logs")
    env = clean_environment(
        **mariadb_lab.env,
        SLURM_CONF=cluster["env"]["SLURM_CONF"],
        # The production schemas, which the script sets for the workers: declared first.
        **{f"{PACKAGE.upper()}_SCHEMA_PREFIX": production},
        WORK_LOG=str(logs / "calls.log"),
        WORK_SECONDS="0.3",
        WORKER_SLEEP="1",
        PYTHONUNBUFFERED="1",
    )
    env["PATH"] = f"{project_env / 'bin'}{os.pathsep}{env['PATH']}"  # sbatch passes it on
    setup = {"project": project, "env": env, "logs": logs}
    run_python(setup, PACKAGE, "declare", module=True)
    run_python(
        setup,
        f"import {PACKAGE}; from {PACKAGE} import subject; {PACKAGE}.activate(); "
        f"subject.Subject.insert([(i, f's{{i}}') for i in range(1, {KEYS + 1})])",
    )
    yield setup
    run_python(
        setup,
        f"import {PACKAGE}; {PACKAGE}.activate()\n"
        f"for m in reversed({PACKAGE}.MODULES): m.schema.drop(prompt=False)",
    )


def run_python(setup: dict, code: str, *args: str, module: bool = False) -> str:
    done = subprocess.run(
        ["python", "-m" if module else "-c", code, *args],
        cwd=setup["project"],
        env=setup["env"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def state(setup: dict) -> dict:
    """The Work table's job counts and the keys made so far."""
    code = (
        f"import json, {PACKAGE}; {PACKAGE}.activate(); from {PACKAGE}.work import Work; "
        "print(json.dumps({'jobs': Work.jobs.progress(), "
        "'made': sorted(r['subject_id'] for r in Work().to_dicts())}))"
    )
    return json.loads(run_python(setup, code))


def calls(setup: dict) -> Counter:
    """How many times make() started, by key."""
    return Counter(COMMON.make_calls(setup["logs"] / "calls.log"))


def submit(setup: dict, tasks: int) -> str:
    """The generated script, as the README runs it, with a test-sized memory request."""
    done = slurm(
        "sbatch", "--parsable", f"--array=1-{tasks}", "--mem=300M",
        f"--output={setup['logs']}/worker-%A_%a.out", "deploy/slurm-workers.sh",
        env=setup["env"], cwd=setup["project"],
    )  # fmt: skip
    return done.stdout.strip()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def makers(setup: dict) -> set[str]:
    """The worker processes that have started a make() (from the calls log)."""
    log = setup["logs"] / "calls.log"
    return {line.split()[1] for line in log.read_text().splitlines()} if log.exists() else set()


def cancel(setup: dict, job: str, tasks: int) -> list[tuple[str, str]]:
    """scancel the array job; each task's final state and exit code once all have ended."""
    started = time.monotonic()
    slurm("scancel", job, env=setup["env"])
    wait_until(
        lambda: not slurm("squeue", "-h", "-j", job, env=setup["env"], check=False).stdout.strip(),
        timeout=30,
        what=f"job {job} to end",
    )
    assert time.monotonic() - started < 25, "the workers outlived KillWait (SIGKILL)"
    shown = slurm("scontrol", "-o", "show", "job", job, env=setup["env"]).stdout
    ended = re.findall(r"ArrayTaskId=(\d+) .*?JobState=(\S+) .*?ExitCode=(\S+)", shown)
    assert len(ended) == tasks, shown
    return [(state, code) for _, state, code in ended]


def worker_logs(setup: dict, job: str) -> list[str]:
    return [path.read_text() for path in sorted(setup["logs"].glob(f"worker-{job}_*.out"))]


def test_an_array_job_makes_every_key_once_and_scancel_stops_it_cleanly(lab):
    # Three workers; scancel while they are busy.
    first = submit(lab, 3)
    wait_until(lambda: len(makers(lab)) == 3, 120, "three workers making keys")
    assert cancel(lab, first, 3) == [("CANCELLED", "143:0")] * 3
    for log in worker_logs(lab, first):
        assert "stopped by SIGTERM" in log and "Traceback" not in log, log
    after = state(lab)
    assert after["jobs"]["reserved"] == 0 and after["jobs"]["error"] == 0, after
    assert sorted(calls(lab)) == after["made"]  # the keys in progress were finished
    assert 0 < len(after["made"]) < KEYS

    # A second array job finishes the rest; scancel while its workers wait for work.
    second = submit(lab, 2)
    wait_until(lambda: sum(calls(lab).values()) >= KEYS, 120, "every key to be made")
    wait_until(
        lambda: sum("worker started" in log for log in worker_logs(lab, second)) == 2,
        60,
        "both workers to be under way",
    )
    wait_until(lambda: state(lab)["jobs"]["reserved"] == 0, 30, "the last reservation to go")
    assert cancel(lab, second, 2) == [("CANCELLED", "143:0")] * 2
    for log in worker_logs(lab, second):
        assert "stopped by SIGTERM" in log and "Traceback" not in log, log
    final = state(lab)
    assert final["made"] == list(range(1, KEYS + 1))
    assert calls(lab) == Counter(range(1, KEYS + 1))  # every key made exactly once
    assert final["jobs"]["reserved"] == 0 and final["jobs"]["error"] == 0, final
