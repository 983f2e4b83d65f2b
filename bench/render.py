"""Render timings of the template, as ratios measured in one run.

    python bench/render.py [--repeat N] [--schemas 100] [--tiny]

Prints, each with its goal:
1. rendering the default project, as a ratio to rendering a one-file template (goal <= 1.3x);
2. rendering a 100-schema chain-and-diamond pipeline, same ratio (goal <= 2x).
Every render runs `python -m cookiecutter` in a fresh process, so start-up counts the same
way for the baseline. The generated suite's time is bench/generated_suite.py's, render to
green suite bench/render_install.py's. This is a benchmark, not a test: it always exits 0.
--tiny: one render each, 10 schemas (what the template's own suite runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import TEMPLATE, ratio


def chain_and_diamonds(schemas: int) -> str:
    """s0, then each schema downstream of the last (and of the one 5 back, every 5th)."""
    return "; ".join(
        ["s0"]
        + [f"s{i} <- s{i - 1}" + (f", s{i - 5}" if i % 5 == 0 else "") for i in range(1, schemas)]
    )


def timed(command: list[str], cwd: Path, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def render_time(template: Path, work: Path, repeat: int, *answers: str) -> float:
    """Median wall time of a --no-input render in a fresh process."""
    times = []
    for index in range(repeat):
        out = work / f"out-{template.name}-{len(answers)}-{index}"
        command = [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(out),
            str(template),
        ]
        times.append(timed([*command, *answers], cwd=work))
        shutil.rmtree(out)
    return statistics.median(times)


def one_file_template(work: Path) -> Path:
    base = work / "baseline"
    (base / "{{cookiecutter.name}}").mkdir(parents=True)
    (base / "cookiecutter.json").write_text(json.dumps({"name": "baseline"}))
    (base / "{{cookiecutter.name}}" / "README.md").write_text("# {{ cookiecutter.name }}\n")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="renders per measurement (median)")
    parser.add_argument("--schemas", type=int, default=100, help="schemas of the large render")
    parser.add_argument("--tiny", action="store_true", help="one render each, 10 schemas")
    args = parser.parse_args()
    if args.tiny:
        args.repeat, args.schemas = 1, 10
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        baseline = render_time(one_file_template(work), work, args.repeat)
        default = render_time(TEMPLATE, work, args.repeat)
        spec = chain_and_diamonds(args.schemas)
        large = render_time(TEMPLATE, work, args.repeat, f"schemas={spec}")
    print(f"one-file render: {baseline:.2f} s, default: {default:.2f} s, "
          f"{args.schemas} schemas: {large:.2f} s (medians of {args.repeat})")  # fmt: skip
    ratio("default render / one-file render", default / baseline, 1.3, "x")
    ratio(f"{args.schemas}-schema render / one-file render", large / baseline, 2.0, "x")


if __name__ == "__main__":
    main()
