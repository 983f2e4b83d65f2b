"""The generated project's own test suite on the embedded database, cold and warm, by phase.

    python bench/generated_suite.py [--warm-runs 3] [--tiny] [--venv PATH]
                                    [--answers key=value ...]

Renders the default project (cookiecutter, no input), installs it as its README says with
uv (uv venv, then uv pip install -e ".[dev]"; uv's package cache is warm after the first
install on a machine), then runs the project's own `pytest` with no database configured:
first cold (a new embedded PostgreSQL data folder, .pyc files not yet written), then
--warm-runs times warm. Prints, for each run, the wall time and its phases (interpreter
and pytest, imports, the embedded server's start, the session fixtures, the tests, the
exit), the slowest set-ups and tests of the last warm run, what the package's import
spends its time on, and the median warm wall time against the goal (<= 5 s) as a ratio.

The embedded server's data folder lives in this run's temporary folder (TMPDIR), so the
cold run is cold and no other run on the machine shares it. Timings are of one run of
one machine: a machine busy with other work gives larger numbers. A benchmark, not a
test: it exits 0 whatever the ratio (non-zero only when a step fails). --tiny: one warm
run and no import profile (what the template's own suite runs, with --venv: its shared
environment, whose .pyc files are written, so its "cold" run is cold only for the server).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    environment,
    install,
    print_phases,
    ratio,
    render,
    scratch,
    timed_suite,
    venv_option,
)

GOAL = 5.0  # seconds, warm


def import_profile(python: str, project: Path, package: str, env: dict) -> list:
    """Seconds of `import <package>` (python -X importtime, .pyc warm): the whole, DataJoint
    and its heaviest dependencies (each with what it imports), and the package's own modules
    (their own time only): [(seconds, what)]."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", f"import {package}"],
        cwd=project, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    cumulative, own = {}, 0.0
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        name = fields[2].strip()
        cumulative.setdefault(name, int(fields[1]) / 1e6)
        if name == package or name.startswith(package + "."):
            own += int(fields[0]) / 1e6
    shown = [package, "datajoint", "pandas", "networkx", "numpy", "pydantic_settings"]
    found = [(cumulative[name], name) for name in shown if name in cumulative]
    return [*found, (own, f"{package}'s own modules")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=3, help="warm runs (median)")
    parser.add_argument("--tiny", action="store_true", help="one warm run, no import profile")
    parser.add_argument("--answers", nargs="*", default=[], help="cookiecutter key=value")
    venv_option(parser)
    args = parser.parse_args()
    warm_runs = 1 if args.tiny else max(1, args.warm_runs)
    with scratch("bench-suite-") as folder:
        work = Path(folder)
        (work / "tmp").mkdir()
        env = environment(TMPDIR=str(work / "tmp"))  # the embedded server's data folder
        started = time.perf_counter()
        project = render(work / "out", *args.answers)
        rendered = time.perf_counter()
        python = install(project, "dev", args.venv)
        installed = time.perf_counter()
        package = next(p.name for p in (project / "src").iterdir() if (p / "__init__.py").exists())
        print(f"{project.name}: rendered in {rendered - started:.2f} s, "
              f"installed (uv, warm cache) in {installed - rendered:.2f} s")  # fmt: skip
        runs = [timed_suite(project, python, env, work / "clock")]
        runs += [timed_suite(project, python, env, work / "clock") for _ in range(warm_runs)]
        for index, times in enumerate(runs):
            kind = "cold" if index == 0 else f"warm {index}"
            print(
                f"{kind}: {times['wall']:.2f} s wall, {times['cpu']:.2f} s CPU ({times['summary']})"
            )
            print_phases(times)
        print("slowest of the last run:")
        for seconds, when, nodeid in runs[-1]["slowest"]:
            print(f"  {seconds:>6.2f} s {when:<8} {nodeid}")
        if not args.tiny:
            print(f"import {package} (python -X importtime), each with what it imports:")
            for seconds, what in import_profile(python, project, package, env):
                print(f"  {seconds:>6.2f} s {what}")
    warm = statistics.median(times["wall"] for times in runs[1:])
    print(f"warm wall time, median of {warm_runs}: {warm:.2f} s (cold: {runs[0]['wall']:.2f} s)")
    ratio("warm generated suite / goal", warm, GOAL, " s")


if __name__ == "__main__":
    sys.exit(main())
