"""Signal trials against a generated project's worker, run by the project's own Python.

    python worker_trials.py PACKAGE TRIALS CONCURRENCY SEED > results.json

Imports the package once, then forks one child per trial: the child runs the
worker's or the `populate` command's real main() -- the code `python -m` runs,
without paying for the interpreter start each time -- and is sent SIGTERM or SIGINT
at a random moment. The parent counts exit codes and tracebacks, then checks the
jobs table for leftovers and runs a fresh worker that must complete every key.
Environment: DJ_* settings, the package's schema prefix, WORK_LOG (make() calls).

"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

PACKAGE, TRIALS, CONCURRENCY, SEED = sys.argv[1], *map(int, sys.argv[2:5])
package = importlib.import_module(PACKAGE)
cli = importlib.import_module(f"{PACKAGE}.__main__")
worker = importlib.import_module(f"{PACKAGE}.worker")
work = importlib.import_module(f"{PACKAGE}.pipeline.work")
subject = importlib.import_module(f"{PACKAGE}.pipeline.subject")
OUTPUT = Path(tempfile.mkdtemp())
TIMEOUT = 60
MAX_DELAY = 0.5  # seconds from a trial's start to its signal


def child(run, output: Path) -> int:
    """Fork a process that runs `run()` as a program would; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        try:
            code = run()
        except SystemExit as stop:  # as the interpreter does at the end of a program
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:  # noqa: BLE001 -- printed, as the interpreter would
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def wait(pid: int, timeout: float = TIMEOUT) -> int | None:
    """Exit code (negative: killed by that signal), or None if it hung (then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_in_child(code) -> str:
    """Run a function in a fresh child (its own connection); returns its printed output."""
    output = OUTPUT / f"helper-{time.monotonic_ns()}.txt"
    status = wait(child(code, output), timeout=300)
    text = output.read_text()
    if status != 0:
        raise SystemExit(f"helper failed ({status}): {text}")
    return text


def print_state() -> int:
    package.activate()
    jobs = work.Work.jobs
    print("STATE", json.dumps({"jobs": jobs.progress(), "made": len(work.Work())}))
    return 0


def state() -> dict:
    line = next(line for line in run_in_child(print_state).splitlines() if line.startswith("STATE"))
    return json.loads(line.removeprefix("STATE "))


ENTERED = [0]  # subjects entered so far
TOP_UP = 1200  # subjects entered whenever fewer are left: 10 fast workers drain ~1000 a second


def enter_subjects() -> int:
    """TOP_UP more subjects, with their jobs already pending."""
    package.activate()
    keys = range(ENTERED[0] + 1, ENTERED[0] + TOP_UP + 1)
    subject.Subject.insert([(i, f"s{i}") for i in keys])
    # What jobs.refresh() would insert, in one statement rather than one per key
    work.Work.jobs.insert([{"subject_id": i, "status": "pending", "priority": 5} for i in keys])
    return 0


def keep_keys_for_the_trials() -> None:
    """Top up the subjects, so that no trial finds the work done before its signal."""
    log = Path(os.environ["WORK_LOG"])
    made = len(log.read_text().splitlines()) if log.exists() else 0
    while ENTERED[0] - made < TOP_UP:
        run_in_child(enter_subjects)
        ENTERED[0] += TOP_UP


def trial_program(rng: random.Random):
    """One of the ways an operator runs the pipeline, with its expected stop signal."""
    kind = rng.choice(["worker", "worker", "populate", "worker-processes"])
    if kind == "worker":
        argv = ["--schema", "work", "--log-level", "WARNING", "--no-progress"]
        return kind, lambda: worker.main(argv)
    if kind == "worker-processes":
        argv = ["--schema", "work", "--log-level", "WARNING", "--processes", "2"]
        return kind, lambda: worker.main(argv)
    return kind, lambda: cli.main(["populate", "Work", "--no-progress"])


def main() -> None:
    rng = random.Random(SEED)
    results = []
    started = time.monotonic()
    for first in range(0, TRIALS, CONCURRENCY):
        keep_keys_for_the_trials()
        batch = []
        for number in range(first, min(TRIALS, first + CONCURRENCY)):
            kind, run = trial_program(rng)
            signum = rng.choice([signal.SIGTERM, signal.SIGINT])
            output = OUTPUT / f"trial-{number}.txt"
            pid = child(run, output)
            batch.append(
                [time.monotonic() + rng.uniform(0.002, MAX_DELAY), pid, kind, signum, output]
            )
        for when, pid, kind, signum, output in sorted(batch, key=lambda item: item[0]):
            time.sleep(max(0.0, when - time.monotonic()))
            done, status = os.waitpid(pid, os.WNOHANG)
            finished_before = done != 0
            if finished_before:
                code = os.waitstatus_to_exitcode(status)
            else:
                os.kill(pid, signum)
                code = wait(pid)
            text = output.read_text(errors="replace")
            results.append(
                {
                    "kind": kind,
                    "signal": signal.Signals(signum).name,
                    "finished_before_signal": finished_before,
                    "code": code,
                    "tracebacks": text.count("Traceback (most recent call last)"),
                    "output": text[-2000:],
                }
            )
    trials_seconds = time.monotonic() - started
    after_trials = state()
    final = OUTPUT / "final.txt"
    final_run = ["--schema", "work", "--log-level", "WARNING"]
    final_code = wait(child(lambda: worker.main(final_run), final), timeout=300)
    calls = Counter(Path(os.environ["WORK_LOG"]).read_text().split()[::2])
    print(
        json.dumps(
            {
                "trials": results,
                "trials_seconds": trials_seconds,
                "keys": ENTERED[0],
                "after_trials": after_trials,
                "final_code": final_code,
                "final_output": final.read_text()[-2000:],
                "final": state(),
                "calls": dict(Counter(calls.values())),  # {times a key was made: how many keys}
            }
        )
    )


if __name__ == "__main__":
    main()
