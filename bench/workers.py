"""Worker scale-out of a generated pipeline, as speed-ups measured in one run.

    python bench/workers.py [--keys 1000] [--make-seconds 0.02] [--backend mysql|postgresql]

Renders a project, installs it with uv, adds a schema whose make() is I/O-bound (it
sleeps), and populates it with 1, 2 and 4 `python -m <package>.worker` processes on the
same database (MariaDB/MySQL by default). Each run's time is from the first make() to the
last, read from the rows themselves, so interpreter start-up is not counted. Goals:
>= 1.9x with 2 workers, >= 3.5x with 4. A benchmark, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1]
PACKAGE = "benchwork"
SERVERS = {
    "mysql": {"DJ_HOST": "127.0.0.1", "DJ_PORT": "3306", "DJ_USER": "root", "DJ_PASS": ""},
    "postgresql": {"DJ_HOST": "127.0.0.1", "DJ_PORT": "5432", "DJ_USER": "postgres", "DJ_PASS": ""},
}
SLOW_MODULE = '''\
"""An I/O-bound schema: every make() waits, as for a file or a remote service."""

import os
import time

import datajoint as dj

from . import subject

schema = dj.Schema()


@schema
class Slow(dj.Computed):
    definition = """
    -> subject.Subject
    ---
    started : float64
    finished : float64
    """

    def make(self, key):
        started = time.time()
        time.sleep(float(os.environ["MAKE_SECONDS"]))
        self.insert1({**key, "started": started, "finished": time.time()})
'''


def prepare(work: Path) -> tuple[Path, str]:
    """A rendered, installed project with the Slow schema; returns (project, python)."""
    uv = shutil.which("uv") or sys.exit("uv is required: pip install uv")
    subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(work), str(TEMPLATE)]
        + [f"package_name={PACKAGE}", "project_name=Bench Workers"],
        check=True,
        capture_output=True,
    )
    project = work / "bench-workers"
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(project / ".venv")], check=True
    )
    python = str(project / ".venv" / "bin" / "python")
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, "-e", "."], cwd=project, check=True
    )
    add = [python, "-m", PACKAGE, "add-schema", "slow", "--upstream", "subject"]
    subprocess.run(add, cwd=project, check=True, capture_output=True)
    (project / "src" / PACKAGE / "slow.py").write_text(SLOW_MODULE)
    return project, python


def run_python(python: str, project: Path, env: dict, code: str) -> str:
    done = subprocess.run(
        [python, "-c", code], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def populate(python: str, project: Path, env: dict, workers: int, keys: int) -> float:
    """Seconds from the first make() to the last, with `workers` worker processes."""
    reset = (
        f"import {PACKAGE}; from {PACKAGE} import slow, subject; {PACKAGE}.activate(); "
        f"slow.Slow.delete_quick(); slow.Slow.jobs.delete_quick(); "
        f"subject.Subject.insert([(i, f's{{i}}') for i in range({keys})], skip_duplicates=True); "
        f"slow.Slow.jobs.refresh()"
    )
    run_python(python, project, env, reset)
    command = [python, "-m", f"{PACKAGE}.worker", "--schema", "slow", "--log-level", "WARNING"]
    processes = [subprocess.Popen(command, cwd=project, env=env) for _ in range(workers)]
    assert all(process.wait() == 0 for process in processes)
    span = (
        f"import json, {PACKAGE}; from {PACKAGE} import slow; {PACKAGE}.activate(); "
        "rows = slow.Slow().to_dicts(); "
        "print(json.dumps([len(rows), max(r['finished'] for r in rows) - min(r['started'] for r in rows)]))"
    )
    made, seconds = json.loads(run_python(python, project, env, span))
    assert made == keys, f"{made} of {keys} keys made"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--make-seconds", type=float, default=0.02)
    parser.add_argument("--backend", choices=list(SERVERS), default="mysql")
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJ_")}
    env.update(SERVERS[args.backend], DJ_BACKEND=args.backend, MAKE_SECONDS=str(args.make_seconds))
    env[f"{PACKAGE.upper()}_SCHEMA_PREFIX"] = f"bench_{secrets.token_hex(3)}_"
    with tempfile.TemporaryDirectory() as folder:
        project, python = prepare(Path(folder))
        try:
            times = {n: populate(python, project, env, n, args.keys) for n in (1, 2, 4)}
        finally:
            drop = (
                f"import {PACKAGE}; {PACKAGE}.activate()\n"
                f"for module in reversed({PACKAGE}.MODULES): module.schema.drop(prompt=False)"
            )
            run_python(python, project, env, drop)
    print(f"{args.keys} keys, make() waits {args.make_seconds * 1000:.0f} ms, {args.backend}")
    print(f"{'workers':>7} {'seconds':>8} {'speed-up':>9} {'goal':>6}  result")
    for workers, goal in ((1, None), (2, 1.9), (4, 3.5)):
        speedup = times[1] / times[workers]
        verdict = "" if goal is None else ("PASS" if speedup >= goal else "MISS")
        goal_text = "" if goal is None else f"{goal:.1f}x"
        print(f"{workers:>7} {times[workers]:>8.2f} {speedup:>8.2f}x {goal_text:>6}  {verdict}")


if __name__ == "__main__":
    main()
