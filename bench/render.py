"""Render and test-suite timings of the template, as ratios measured in one run.

    python bench/render.py [--repeat N]

Prints, each with its goal:
1. rendering the default project, as a ratio to rendering a one-file template (goal <= 1.3x);
2. rendering a 100-schema chain-and-diamond pipeline, same ratio (goal <= 2x);
3. the generated test suite on the embedded database, warm environment (goal <= 8 s);
4. render + uv venv + install + green test suite, warm package cache (goal <= 10 s).
Every render runs `python -m cookiecutter` in a fresh process, so start-up counts the same
way for the baseline. This is a benchmark, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1]
SPEC_100 = "; ".join(
    ["s0"] + [f"s{i} <- s{i - 1}" + (f", s{i - 5}" if i % 5 == 0 else "") for i in range(1, 100)]
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


def without_database_settings() -> dict[str, str]:
    """The environment with no DJ_* settings, so the generated tests use the embedded database."""
    return {key: value for key, value in os.environ.items() if not key.startswith("DJ_")}


def suite_times(work: Path) -> tuple[float, float]:
    """(warm test-suite time, render-to-green time with a warm package cache)."""
    uv = shutil.which("uv") or sys.exit("uv is required: pip install uv")
    env = without_database_settings()

    def render_install_test(out: Path) -> tuple[Path, float]:
        subprocess.run(
            [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(out), str(TEMPLATE)],
            check=True,
            capture_output=True,
        )
        project = out / "my-pipeline"
        venv = project / ".venv"
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-e", ".[dev]"],
            cwd=project,
            check=True,
        )
        pytest = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        return project, timed(pytest, project, env)

    project, _ = render_install_test(work / "warm")  # warms uv's cache and the embedded server
    pytest = [
        str(project / ".venv" / "bin" / "python"),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    warm_suite = timed(pytest, project, env)
    start = time.perf_counter()
    render_install_test(work / "cold")
    return warm_suite, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="renders per measurement (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        baseline = render_time(one_file_template(work), work, args.repeat)
        default = render_time(TEMPLATE, work, args.repeat)
        large = render_time(TEMPLATE, work, args.repeat, f"schemas={SPEC_100}")
        warm_suite, render_to_green = suite_times(work)
    rows = [
        ("default render / one-file render", default / baseline, 1.3, "x"),
        ("100-schema render / one-file render", large / baseline, 2.0, "x"),
        ("generated suite, embedded db, warm", warm_suite, 8.0, "s"),
        ("render to green suite, warm cache", render_to_green, 10.0, "s"),
    ]
    print(f"one-file render: {baseline:.2f} s (median of {args.repeat})")
    print(f"{'measurement':<40} {'value':>8} {'goal':>8}  result")
    for name, value, goal, unit in rows:
        verdict = "PASS" if value <= goal else "MISS"
        print(f"{name:<40} {value:>7.2f}{unit} {goal:>7.1f}{unit}  {verdict}")


if __name__ == "__main__":
    main()
