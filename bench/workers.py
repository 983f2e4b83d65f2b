"""Worker scale-out of a generated pipeline, as speed-ups measured in one run.

    python bench/workers.py [--keys 1000] [--make-seconds 0.02] [--backend mysql|postgresql]
                            [--workers 1,2,4,8,16] [--settings JSON] [--prefix PREFIX] [--tiny]
                            [--venv PATH]

Renders a project for the backend (a postgresql project has the postgres extra), installs
it with uv, adds a schema whose make() is I/O-bound (it sleeps: src/<package>/slow.py, by
`python -m <package> add-schema`), and populates it with
1, 2, 4, 8 and 16 `python -m <package>.worker` processes on the same database. Every worker
waits in its first make() until all have started, so interpreter start-up is not counted;
each run's time is from that start to the last make()'s end, read from the rows. It also
measures the worker's overhead per key beyond make() itself (one worker, make() waiting
0 s). Goals: 4 workers >= 3.8x, 8 >= 7.2x, 16 no slower than 8. A benchmark, not a test:
it always exits 0. `--settings` (DJ_* settings as JSON) and `--prefix` (a schema prefix that
account may use) run it as another account than this machine's root / postgres. --tiny:
8 keys, make() waiting 0 s, 1 and 2 workers (what the template's own suite runs).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from _common import SERVERS, add_schema, environment, prepare, ratio, venv_option

PACKAGE = "benchwork"
SLOW_MODULE = '''\
"""An I/O-bound schema: every make() waits, as for a file or a remote service."""

import os
import time
from pathlib import Path

import datajoint as dj

from . import subject

schema = dj.Schema()
STARTED = []


def wait_for_the_others():
    """The first make() of each process: report ready, wait for the bench's go."""
    barrier = Path(os.environ["BENCH_BARRIER"])
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.005)


@schema
class Slow(dj.Computed):
    definition = """
    -> subject.Subject
    ---
    started : float64
    finished : float64
    """

    def make(self, key):
        if not STARTED:
            STARTED.append(wait_for_the_others())
        started = time.time()
        time.sleep(float(os.environ["MAKE_SECONDS"]))
        self.insert1({**key, "started": started, "finished": time.time()})
'''


def prepare_project(work: Path, backend: str, venv: Path | None) -> tuple[Path, str]:
    """A rendered, installed project with the Slow schema; returns (project, python)."""
    answers = [f"database_backend={backend}", "schemas=subject", "object_store=none"]
    project, python = prepare(work, PACKAGE, "Bench Workers", *answers, venv=venv)
    add_schema(project, python, PACKAGE, "slow", SLOW_MODULE)
    return project, python


def run_python(python: str, project: Path, env: dict, code: str) -> str:
    done = subprocess.run(
        [python, "-c", code], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def populate(python: str, project: Path, env: dict, workers: int, keys: int) -> float:
    """Seconds from the start of all `workers` worker processes to the last make()'s end."""
    reset = (
        f"import {PACKAGE}; from {PACKAGE} import slow, subject; {PACKAGE}.activate(); "
        f"slow.Slow.delete_quick(); slow.Slow.jobs.delete_quick(); "
        f"subject.Subject.insert([(i, f's{{i}}') for i in range({keys})], skip_duplicates=True); "
        # what jobs.refresh() inserts, in one statement
        f"slow.Slow.jobs.insert([dict(subject_id=i, status='pending', priority=5) "
        f"for i in range({keys})])"
    )
    run_python(python, project, env, reset)
    command = [python, "-m", f"{PACKAGE}.worker", "--schema", "slow", "--log-level", "WARNING"]
    with tempfile.TemporaryDirectory() as barrier:
        run_env = {**env, "BENCH_BARRIER": barrier}
        processes = [subprocess.Popen(command, cwd=project, env=run_env) for _ in range(workers)]
        while len(list(Path(barrier).glob("ready-*"))) < workers:
            ended = [process.returncode for process in processes if process.poll() is not None]
            if ended:  # before its first make(): it will never be ready
                for process in processes:
                    process.kill()
                raise SystemExit(f"a worker exited before its first make() (exit {ended[0]})")
            time.sleep(0.01)
        go = time.time()
        (Path(barrier) / "go").touch()
        assert all(process.wait() == 0 for process in processes)
    span = (
        f"import json, {PACKAGE}; from {PACKAGE} import slow; {PACKAGE}.activate(); "
        "rows = slow.Slow().to_dicts(); "
        "print(json.dumps([len(rows), max(r['finished'] for r in rows)]))"
    )
    made, finished = json.loads(run_python(python, project, env, span))
    assert made == keys, f"{made} of {keys} keys made"
    return finished - go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--make-seconds", type=float, default=0.02)
    parser.add_argument("--backend", choices=list(SERVERS), default="mysql")
    parser.add_argument("--workers", default="1,2,4,8,16", help="comma-separated counts")
    parser.add_argument("--settings", metavar="JSON", help="DJ_* settings of the account to use")
    parser.add_argument("--prefix", default="bench_", help="start of the schema names")
    parser.add_argument("--tiny", action="store_true", help="8 keys, 0 s, 1 and 2 workers")
    venv_option(parser)
    args = parser.parse_args()
    if args.tiny:
        args.keys, args.make_seconds, args.workers = 8, 0.0, "2"
    counts = sorted({1, *map(int, args.workers.split(","))})
    env = environment()
    env.update(json.loads(args.settings) if args.settings else SERVERS[args.backend])
    env["DJ_BACKEND"] = args.backend
    env[f"{PACKAGE.upper()}_SCHEMA_PREFIX"] = f"{args.prefix}{secrets.token_hex(3)}_"
    with tempfile.TemporaryDirectory() as folder:
        project, python = prepare_project(Path(folder), args.backend, args.venv)
        try:
            bare = populate(python, project, {**env, "MAKE_SECONDS": "0"}, 1, args.keys)
            env["MAKE_SECONDS"] = str(args.make_seconds)
            times = {n: populate(python, project, env, n, args.keys) for n in counts}
        finally:
            drop = (
                f"import {PACKAGE}; {PACKAGE}.activate()\n"
                f"for module in reversed({PACKAGE}.MODULES): module.schema.drop(prompt=False)"
            )
            run_python(python, project, env, drop)
    print(f"{args.keys} keys, make() waits {args.make_seconds * 1000:.0f} ms, {args.backend}")
    print(f"worker overhead per key beyond make(): {bare / args.keys * 1000:.1f} ms")
    print(f"{'workers':>7} {'seconds':>8} {'speed-up':>9} {'goal':>6}  result")
    goals = {2: 1.9, 4: 3.8, 8: 7.2}
    for workers in counts:
        speedup = times[1] / times[workers]
        goal = goals.get(workers)
        if workers == 16 and 8 in times:
            goal = times[1] / times[8]  # no slower than 8 workers
        verdict = "" if goal is None else ("PASS" if speedup >= goal else "MISS")
        goal_text = "" if goal is None else f"{goal:.1f}x"
        print(f"{workers:>7} {times[workers]:>8.2f} {speedup:>8.2f}x {goal_text:>6}  {verdict}")
    most = max((n for n in counts if n in goals), default=None)
    if most is not None:
        ratio(f"speed-up of {most} workers / goal", times[1] / times[most], goals[most], "x",
              at_least=True)  # fmt: skip


if __name__ == "__main__":
    main()
