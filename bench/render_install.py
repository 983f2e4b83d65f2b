"""From nothing to a green test suite: render, install, test, warm, by phase.

    python bench/render_install.py [--tiny] [--answers key=value ...]

A lab member's first minutes with the template, on a machine that has used it before:
render the default project (cookiecutter, no input), `uv venv`, `uv pip install -e
".[dev]"`, and the project's own `pytest` on the embedded database, until it passes. A
first round, not timed, warms uv's package cache and the embedded server's data folder
(the one a project of the same package name uses: in this run's TMPDIR); the second round
is timed. Prints each phase and the total against the goal (<= 10 s) as a ratio; the
suite's own phases come from bench/generated_suite.py's clock.

Timings are of one run of one machine: a machine busy with other work gives larger
numbers, and uv asks the package index whether its cache is current (the network counts).
A benchmark, not a test: it exits 0 whatever the ratio (non-zero only when a step fails).
--tiny: no warm-up round (uv's cache is what the machine has; the data folder is new).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import environment, print_phases, ratio, render, scratch, timed_suite, uv

GOAL = 10.0  # seconds, render to green, warm


def render_to_green(out: Path, env: dict, answers: list[str], clock: Path) -> dict:
    """One round: each phase's seconds, and the suite's own phases."""
    phases = {}
    started = time.perf_counter()
    project = render(out, *answers)
    phases["render (cookiecutter)"] = time.perf_counter() - started
    mark = time.perf_counter()
    venv = project / ".venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    phases["uv venv"] = time.perf_counter() - mark
    mark = time.perf_counter()
    python = str(venv / "bin" / "python")
    subprocess.run([uv(), "pip", "install", "-q", "--python", python, "-e", ".[dev]"],
                   cwd=project, check=True, env=env)  # fmt: skip
    phases['uv pip install -e ".[dev]"'] = time.perf_counter() - mark
    suite = timed_suite(project, python, env, clock)
    phases[f"pytest ({suite['summary']})"] = suite["wall"]
    return {"phases": phases, "total": time.perf_counter() - started, "suite": suite}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="no warm-up round")
    parser.add_argument("--answers", nargs="*", default=[], help="cookiecutter key=value")
    args = parser.parse_args()
    with scratch("bench-render-install-") as folder:
        work = Path(folder)
        (work / "tmp").mkdir()
        env = environment(TMPDIR=str(work / "tmp"))  # the embedded server's data folder
        if not args.tiny:
            warm_up = render_to_green(work / "warm-up", env, args.answers, work / "clock")
            print(f"warm-up round (not counted): {warm_up['total']:.2f} s")
        timed = render_to_green(work / "timed", env, args.answers, work / "clock")
    print("render to green suite" + (" (no warm-up: --tiny)" if args.tiny else ", warm:"))
    for name, seconds in timed["phases"].items():
        print(f"  {name:<52} {seconds:>6.2f} s")
    print(f"  the suite's phases ({timed['suite']['cpu']:.2f} s CPU):")
    print_phases(timed["suite"], indent="    ")
    print(f"  {'total':<52} {timed['total']:>6.2f} s")
    ratio("render to green suite / goal", timed["total"], GOAL, " s")


if __name__ == "__main__":
    sys.exit(main())
