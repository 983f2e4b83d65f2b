"""Backups killed at random moments, and the memory restore needs, measured in one run.

    python bench/backup.py [--trials 300] [--rows 20000] [--backend mysql|postgresql]
                           [--project PATH --python PATH --package NAME] [--prefix PREFIX]
                           [--tiny] [--venv PATH]

Renders a project (or uses an installed one: --project, --python, --package), fills the
starter pipeline with its sample data (tests/sample_data.py) and stored objects, and adds a
table of `--rows` rows of
about 4 kB each under a second prefix. Then:

- kills (SIGKILL) `python -m <package> backup` at a moment drawn uniformly from the time it
  writes (from its hidden partial folder to its manifest), `--trials` times, and counts the
  folders left behind (the final one or the hidden partial one) that restore's checks
  accept: the goal is 0. Backups that finished before the kill are counted apart, and must
  all be accepted.
- restores a small and a large backup and compares the peak memory of the two restores
  (the python process's maximum resident size): the goal is a ratio near 1 while the dumps'
  sizes differ many times, as restore streams the dumps. The last lines are the ratios:
  incomplete archives accepted per trial (goal 0) and peak memory, large / small (goal
  <= 1.25x).

The database is reached with the DJ_* variables in the environment (default: this machine's
MariaDB as root, or PostgreSQL as postgres). A benchmark, not a test: it exits 0 unless a
step fails, whatever the counts. --tiny: 3 trials, 300 rows (what the template's own suite
runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SERVERS, environment, prepare, ratio, venv_option

PACKAGE = "benchbackup"
MANIFEST = "manifest.json"
MEMORY_GOAL = 1.25  # peak memory of restoring the large dump / the small one

# A table of bulky rows in the subject schema: a 4 kB text and a 1 kB in-table blob each.
BULK = """
import sys
import numpy as np
import datajoint as dj
import {package}
{package}.activate()
from {package} import subject

@subject.schema
class Bulk(dj.Manual):
    definition = '''
    bulk_id : int32
    ---
    text : varchar(4000)
    data : <blob>
    '''

rows = int(sys.argv[1])
text = ("{package} " * 500)[:4000]
for start in range(0, rows, 500):
    Bulk.insert(
        [{{"bulk_id": i, "text": text, "data": np.full(128, i, dtype=np.float64)}}
         for i in range(start, min(rows, start + 500))]
    )
"""

# The starter pipeline's sample data, as the generated tests enter them.
SAMPLE = """
import sys
sys.path.insert(0, "tests")
import {package}
from sample_data import SAMPLE_DATA
{package}.activate()
{package}.pipeline.insert_sample_data(SAMPLE_DATA)
"""

# Restore's checks on each folder: its refusal, or what the accepted archive holds.
CHECK = """
import json, sys
from pathlib import Path
from {package}.toolkit import backup

verdicts = {{}}
for folder in sys.argv[1:]:
    try:
        manifest, _ = backup.check(Path(folder))
    except (backup.BackupError, OSError) as error:
        verdicts[folder] = str(error)
    else:
        # pg_dump writes a random key in each dump: its files are compared by name
        verdicts[folder] = {{"rows": sorted(manifest["rows"].items()), "dumps": sorted(manifest["dumps"]),
                            "objects": sorted(manifest["objects"].items())}}
print(json.dumps(verdicts))
"""

DROP = """
import sys
import {package}
from {package}.toolkit import operations
for prefix in sys.argv[1:]:
    operations.reset(operations.reset_plan(prefix))
"""


class Project:
    """Python and CLI runs of the installed project, under one prefix at a time."""

    def __init__(self, root: Path, python: str, package: str, env: dict[str, str]):
        self.root, self.python, self.package, self.env = root, python, package, env

    def environment(self, prefix: str) -> dict[str, str]:
        return {**self.env, f"{self.package.upper()}_SCHEMA_PREFIX": prefix}

    def run(self, prefix: str, *args: str) -> str:
        done = subprocess.run(
            [self.python, *args], cwd=self.root, env=self.environment(prefix),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            sys.exit(f"{' '.join(args[:3])} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def code(self, prefix: str, source: str, *args: str) -> str:
        return self.run(prefix, "-c", source.format(package=self.package), *args)

    def backup_command(self, folder: Path) -> list[str]:
        return [self.python, "-m", self.package, "backup", "--to", str(folder)]

    def restore_peak(self, prefix: str, folder: Path, into: str) -> int:
        """Peak resident memory (kB) of a restore process."""
        process = subprocess.Popen(
            [self.python, "-m", self.package, "restore", str(folder), "--prefix", into],
            cwd=self.root, env=self.environment(prefix), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out, err = process.communicate()
        if process.returncode:
            sys.exit(f"restore failed:\n{out.decode()}{err.decode()}")
        return usage.ru_maxrss


def size(folder: Path) -> int:
    return sum(path.stat().st_size for path in (folder / "dump").iterdir())


def started_writing(folder: Path, process: subprocess.Popen) -> bool:
    """Wait until the backup's hidden partial folder appears; False if it ended first."""
    while not any(folder.parent.glob(f".{folder.name}.partial-*")):
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    return True


def kill_trials(project: Project, prefix: str, work: Path, trials: int) -> float:
    """SIGKILL backups at random moments while they write; count the leftovers restore's
    checks accept. Returns the wrong verdicts per trial (incomplete ones accepted, complete
    ones refused)."""
    (work / "trials").mkdir()
    reference = work / "trials" / "reference"  # uninterrupted: what a complete one holds
    process = subprocess.Popen(project.backup_command(reference), cwd=project.root,
                               env=project.environment(prefix))  # fmt: skip
    assert started_writing(reference, process)
    started = time.monotonic()
    while not (reference / MANIFEST).exists() and process.poll() is None:
        time.sleep(0.001)
    window = time.monotonic() - started  # from the partial folder to the manifest
    assert process.wait() == 0
    rng = random.Random(int.from_bytes(secrets.token_bytes(4), "big"))
    finished, killed = [], []
    for trial in range(trials):
        folder = work / "trials" / f"t{trial}"
        process = subprocess.Popen(
            project.backup_command(folder), cwd=project.root, env=project.environment(prefix),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if started_writing(folder, process):
                process.wait(timeout=rng.uniform(0, window * 1.1))
            finished.append(folder)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed.append(folder)
    leftovers = [
        path for path in (work / "trials").iterdir()
        if path.name.startswith(".") or path in killed
    ]  # fmt: skip
    output = project.code(prefix, CHECK, str(reference), *map(str, [*leftovers, *finished]))
    verdicts = json.loads(output.strip().splitlines()[-1])
    whole = verdicts[str(reference)]
    accepted = [path for path in leftovers if not isinstance(verdicts[str(path)], str)]
    incomplete = [path for path in accepted if verdicts[str(path)] != whole]
    print(f"a backup writes for {window:.2f} s (partial folder to manifest); {trials} trials, "
          "each killed (SIGKILL) at a random moment of it or a little after")  # fmt: skip
    print(f"  killed: {len(killed)}; folders left behind: {len(leftovers)} "
          f"(hidden partial ones: {sum(p.name.startswith('.') for p in leftovers)})")  # fmt: skip
    print(
        f"  accepted by restore's checks: {len(accepted)} (complete backups killed as they "
        "exited: the same rows, dumps and objects as an uninterrupted one)"
    )
    print(f"  incomplete archives accepted by restore: {len(incomplete)}  (goal: 0)")
    for path in incomplete:
        print(f"    ACCEPTED: {path}: {verdicts[str(path)]}")
    refused = [verdicts[str(path)] for path in finished if verdicts[str(path)] != whole]
    print(
        f"  finished before the kill: {len(finished)}, complete and accepted: "
        f"{len(finished) - len(refused)}{'  MISS: ' + str(refused[0]) if refused else ''}"
    )
    return (len(incomplete) + len(refused)) / trials


def memory(
    project: Project, small: str, large: str, work: Path, tag: str
) -> tuple[list[str], float]:
    """Peak memory of restoring a small and a large backup: the prefixes it restored into,
    and the ratio of the two peaks."""
    peaks, sizes, restored = {}, {}, []
    for name, prefix in (("small", small), ("large", large)):
        folder = work / f"memory-{name}"
        project.run(prefix, "-m", project.package, "backup", "--to", str(folder))
        into = f"{prefix[:-1]}m{tag}_"
        restored.append(into)
        peaks[name] = project.restore_peak(prefix, folder, into)
        sizes[name] = size(folder)
    grown = (peaks["large"] - peaks["small"]) / 1024
    print(f"restore peak memory: small dump {sizes['small'] / 1e6:.1f} MB -> "
          f"{peaks['small'] / 1024:.0f} MB, large dump {sizes['large'] / 1e6:.1f} MB -> "
          f"{peaks['large'] / 1024:.0f} MB")  # fmt: skip
    print(f"  dump size ratio {sizes['large'] / sizes['small']:.1f}x, "
          f"peak memory ratio {peaks['large'] / peaks['small']:.2f}x, {grown:+.0f} MB "
          "(goal: near 1, growth far below the dump's size)")  # fmt: skip
    return restored, peaks["large"] / peaks["small"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--rows", type=int, default=20000, help="rows of the large set")
    parser.add_argument("--backend", choices=list(SERVERS), default="mysql")
    parser.add_argument("--project", type=Path, help="an installed rendered project")
    parser.add_argument("--python", help="the project's python (with --project)")
    parser.add_argument("--package", default=None, help="the project's package (with --project)")
    parser.add_argument("--prefix", help="the start of the schema names to use")
    parser.add_argument("--tiny", action="store_true", help="3 trials, 300 rows")
    venv_option(parser)
    args = parser.parse_args()
    if args.tiny:
        args.trials, args.rows = 3, 300
    given = {key: value for key, value in os.environ.items() if key.startswith("DJ_")}
    env = environment(**(given or {**SERVERS[args.backend], "DJ_BACKEND": args.backend}))
    tag = secrets.token_hex(2)
    base = args.prefix or f"bench_{tag}_"
    small, large = f"{base}s_", f"{base}l_"
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.project:
            project = Project(args.project, args.python, args.package or "bkup", env)
        else:
            answers = [f"database_backend={args.backend}"]
            rendered = prepare(work, PACKAGE, "Bench Backup", *answers, venv=args.venv)
            project = Project(*rendered, PACKAGE, env)
        prefixes = [small, large]
        try:
            project.code(small, SAMPLE)
            project.code(small, BULK, "10")
            project.code(large, BULK, str(args.rows))
            wrong = kill_trials(project, small, work, args.trials)
            restored, peaks = memory(project, small, large, work, tag)
            prefixes += restored
        finally:
            subprocess.run([project.python, "-c", DROP.format(package=project.package), *prefixes],
                           cwd=project.root, env=env, capture_output=True, check=False)  # fmt: skip
    ratio("wrong verdicts of restore's checks per killed backup", wrong, 0)
    ratio("restore peak memory, large / small dump", peaks, MEMORY_GOAL, "x")


if __name__ == "__main__":
    main()
