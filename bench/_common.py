"""What the bench scripts (and the template's worker tests) share: rendering and installing a
project, the database administrators, the Work schema the worker trials populate, timing a
generated project's own test suite by phase, and the one `ratio` line every script prints.

Not a bench script itself (tests/test_bench.py runs every other bench/*.py).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1]

#: This machine's database servers as their administrators (the scripts' default account).
SERVERS = {
    "mysql": {"DJ_HOST": "127.0.0.1", "DJ_PORT": "3306", "DJ_USER": "root", "DJ_PASS": ""},
    "postgresql": {"DJ_HOST": "127.0.0.1", "DJ_PORT": "5432", "DJ_USER": "postgres", "DJ_PASS": ""},
}

#: A schema whose make() logs its start and its end (inside the transaction), sleeps
#: WORK_SECONDS and fails for the subject WORK_FAIL names: bench/worker_faults.py,
#: tests/test_workers.py and tests/test_slurm.py write it as src/<package>/work.py.
WORK_MODULE = '''\
"""A test schema whose make() is slow, logs every call and fails for one key."""

import os
import time

import datajoint as dj

from . import subject

schema = dj.Schema()


def note(key, event):
    with open(os.environ["WORK_LOG"], "a") as log:
        log.write(f"{key['subject_id']} {os.getpid()} {event}\\n")


@schema
class Work(dj.Computed):
    definition = """
    -> subject.Subject
    ---
    worker_pid : int32
    """

    def make(self, key):
        note(key, "start")
        time.sleep(float(os.environ.get("WORK_SECONDS", "0.05")))
        if str(key["subject_id"]) == os.environ.get("WORK_FAIL", "none"):
            raise ValueError(f"bad subject {key['subject_id']}")
        self.insert1({**key, "worker_pid": os.getpid()})
        note(key, "end")
'''


def make_calls(log: Path) -> dict[int, int]:
    """How many times Work's make() started, by key (from its WORK_LOG)."""
    counts: dict[int, int] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        key, _, event = line.split()
        if event == "start":
            counts[int(key)] = counts.get(int(key), 0) + 1
    return counts


def add_schema(project: Path, python: str, package: str, name: str, source: str) -> None:
    """`python -m <package> add-schema NAME --upstream subject` (the module, its test and
    its place in __init__.py), then the module's text replaced by `source`."""
    command = [python, "-m", package, "add-schema", name, "--upstream", "subject"]
    subprocess.run(command, cwd=project, check=True, capture_output=True, env=environment())
    (project / "src" / package / f"{name}.py").write_text(source)


def environment(**extra: str) -> dict[str, str]:
    """This environment as a lab member's laptop has it: no DataJoint settings, no options
    meant for a surrounding pytest run, .pyc files written (CI machines set
    PYTHONDONTWRITEBYTECODE: every Python start would compile pandas and DataJoint again)."""
    drop = {"PYTEST_ADDOPTS", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJ_") and k not in drop}
    env.update(extra)
    return env


def uv() -> str:
    return shutil.which("uv") or sys.exit("uv is required: pip install uv")


def render(out: Path, *answers: str) -> Path:
    """`cookiecutter --no-input` of the template into `out` (answers: key=value); the project."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(out),
            str(TEMPLATE),
            *answers,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"render failed:\n{done.stdout}{done.stderr}")
    (project,) = set(out.iterdir()) - before
    return project


def install(project: Path, extras: str = "", venv: Path | None = None) -> str:
    """uv venv (unless `venv` is given) and `uv pip install -e .[extras]`; its python."""
    venv = venv or project / ".venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    target = f"{project}[{extras}]" if extras else str(project)
    subprocess.run([uv(), "pip", "install", "-q", "--python", python, "-e", target], check=True)
    return python


def prepare(
    work: Path, package: str, name: str, *answers: str, extras: str = "", venv: Path | None = None
) -> tuple[Path, str]:
    """A project rendered (package_name, project_name and `answers`) and installed in its own
    .venv, or in `venv`: (project, python)."""
    project = render(work, f"package_name={package}", f"project_name={name}", *answers)
    return project, install(project, extras, venv)


def venv_option(parser) -> None:
    """--venv: install into an existing virtual environment (the template's suite shares
    one: its packages installed, their .pyc files written) instead of a new one."""
    parser.add_argument("--venv", type=Path, help="install into this virtual environment")


def ratio(name: str, value: float, goal: float, unit: str = "", *, at_least: bool = False) -> str:
    """The line each bench script ends with, the one tests/test_bench.py looks for:
    `ratio <name>: <value / goal> (<value> against the goal <= / >= <goal>) PASS|MISS`."""
    met = value >= goal if at_least else value <= goal
    share = value / goal if goal else value  # a goal of 0: the value itself
    line = (
        f"ratio {name}: {share:.2f} ({value:.2f}{unit} against the goal "
        f"{'>=' if at_least else '<='} {goal:g}{unit}) {'PASS' if met else 'MISS'}"
    )
    print(line, flush=True)
    return line


# ---- a generated project's own suite, timed by phase

#: A pytest plugin (loaded with -p) that writes the moments of a run and the time of each
#: fixture's set-up to $BENCH_CLOCK when pytest ends, and the moment the process exits.
CLOCK_PLUGIN = """\
import atexit, json, os, time

import pytest

MOMENTS = {"plugin": time.time()}
FIXTURES, WHEN = {}, {"setup": 0.0, "call": 0.0, "teardown": 0.0}
SLOWEST = []


def _exited():
    with open(os.environ["BENCH_CLOCK"] + ".exit", "w") as file:
        file.write(repr(time.time()))


atexit.register(_exited)  # registered first: runs after the embedded server's stop


def pytest_sessionstart(session):
    MOMENTS["session"] = time.time()


def pytest_collection_finish(session):
    MOMENTS["collected"] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        name = fixturedef.argname
        FIXTURES[name] = FIXTURES.get(name, 0.0) + time.perf_counter() - started


def pytest_runtest_logreport(report):
    WHEN[report.when] += report.duration
    SLOWEST.append((report.duration, report.when, report.nodeid))


def pytest_unconfigure(config):
    MOMENTS["unconfigure"] = time.time()
    SLOWEST.sort(reverse=True)
    with open(os.environ["BENCH_CLOCK"], "w") as file:
        json.dump({"moments": MOMENTS, "fixtures": FIXTURES, "when": WHEN,
                   "slowest": SLOWEST[:5]}, file)
"""


def timed_suite(project: Path, python: str, env: dict[str, str], work: Path) -> dict:
    """Run the project's `pytest` (quiet, no cache) once; its phases in seconds.

    wall: the whole process; start: to pytest's first plugin (interpreter and pytest);
    imports: on to the end of collection (conftest, DataJoint, the package, the test
    modules); server: the `database` fixture (the embedded server's start and the
    connection); fixtures: the other set-ups and every teardown (declare, sample data,
    populate, drop); tests: the tests themselves; exit: after pytest, to the process's end
    (the embedded server's stop, the interpreter's); other: the rest of the wall time (pytest
    between tests, its report); cpu: the pytest process's CPU seconds.
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench_clock.py").write_text(CLOCK_PLUGIN)
    clock = work / f"clock-{time.monotonic_ns()}.json"
    run_env = {
        **env,
        "BENCH_CLOCK": str(clock),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(work), env.get("PYTHONPATH")])),
    }
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_clock"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    done = subprocess.run(
        command, cwd=project, env=run_env, capture_output=True, text=True, check=False
    )
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"the generated suite failed ({done.returncode}):\n{done.stdout[-4000:]}"
                 f"{done.stderr[-2000:]}")  # fmt: skip
    data = json.loads(clock.read_text())
    moments, fixtures, when = data["moments"], data["fixtures"], data["when"]
    exited = float((clock.parent / (clock.name + ".exit")).read_text())
    server = fixtures.get("database", 0.0)
    times = {
        "wall": ended - started,
        # pytest's own CPU time (not the server's): what a busy machine changes least
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "start": moments["plugin"] - started,
        "imports": moments["collected"] - moments["plugin"],
        "server": server,
        "fixtures": when["setup"] + when["teardown"] - server,
        "tests": when["call"],
        "exit": ended - moments["unconfigure"],
        "exit_after_atexit": ended - exited,
        "other": 0.0,  # set below: the rest of the wall time
        "pipeline": fixtures.get("pipeline", 0.0),
        "slowest": data["slowest"],
        "summary": done.stdout.strip().splitlines()[-1],
    }
    times["other"] = times["wall"] - sum(times[key] for key, _ in PHASES if key != "other")
    return times


PHASES = (
    ("start", "interpreter and pytest"),
    ("imports", "imports: conftest, DataJoint, the package, tests"),
    ("server", "embedded server start and connection"),
    ("fixtures", "fixtures: declare, sample data, populate, drop"),
    ("tests", "the tests"),
    ("exit", "exit: server stop, interpreter"),
    ("other", "the rest: pytest between tests, its report"),
)


def print_phases(times: dict, indent: str = "  ") -> None:
    for key, label in PHASES:
        print(f"{indent}{label:<52} {times[key]:>6.2f} s")


def scratch(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder the embedded PostgreSQL (its own user, when we are root) can reach."""
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    os.chmod(folder.name, 0o755)
    return folder
