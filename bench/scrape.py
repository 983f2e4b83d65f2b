"""What a dashboard scrape costs on a large pipeline, measured in one run.

    python bench/scrape.py [--schemas 100] [--jobs 100000] [--scrapes 400]
                           [--backend mysql|postgresql] [--venv PATH] [--prefix PREFIX] [--tiny]

Renders a project whose pipeline is a chain of `--schemas` schemas (every one after the
first has an auto-populated table), installs it with uv, declares it under a throwaway
prefix, and gives the first auto-populated table `--jobs` jobs rows: pending, reserved by
four workers, failed with a message, done. It then serves the dashboard in this process
(a uvicorn thread) and measures:

- one reading of the database, the work every scrape did before readings were shared:
  its seconds and the queries it sends;
- the queries the database receives per scrape of /metrics and /api/status (goal: none);
- /metrics latency, one client and 8 at a time, and /healthz latency while a reading
  holds the database;
- `promtool check metrics` on a real answer, when promtool is installed.

The database is the local MariaDB or PostgreSQL (root / postgres), or the one the DJ_*
variables name. A benchmark, not a test: it exits 0 whatever the results, and non-zero
only when it could not measure. The last line is the ratio of a reading to a scrape
against its goal (>= 10x). --tiny: 3 schemas, 300 jobs rows, 16 scrapes (what the
template's own suite runs).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import SERVERS, install, ratio, render

PACKAGE = "benchscrape"
SPEED_UP_GOAL = 10.0  # a reading of the database / a scrape of /metrics
WORKERS = 8  # concurrent scrapers


def chain(schemas: int) -> str:
    """A pipeline spec: s0, then each schema downstream of the last (and of one 5 back)."""
    entries = ["s0"] + [
        f"s{i} <- s{i - 1}" + (f", s{i - 5}" if i % 5 == 0 else "") for i in range(1, schemas)
    ]
    return "; ".join(entries)


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, str]:
    """Render and install the project; returns it and the Python that has it."""
    project = render(
        work,
        f"package_name={PACKAGE}",
        "project_name=Bench Scrape",
        "object_store=none",
        f"database_backend={args.backend}",
        f"schemas={chain(args.schemas)}",
    )
    venv = Path(args.venv) if args.venv else None
    return project, install(project, "dashboard", venv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs rows in all")
    parser.add_argument("--scrapes", type=int, default=400, help="requests per measurement")
    parser.add_argument("--backend", choices=list(SERVERS), default="mysql")
    parser.add_argument("--venv", help="install into this virtual environment")
    parser.add_argument("--prefix", help="schema prefix (default: bench_<random>_)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="3 schemas, 300 jobs, 16 scrapes")
    args = parser.parse_args()
    if args.tiny:
        args.schemas, args.jobs, args.scrapes = 3, 300, 16
    if args.measure:  # in the project's environment
        measure(args)
        return
    env = dict(os.environ)
    if "DJ_USER" not in env:
        env.update(SERVERS[args.backend])
    env.setdefault("DJ_BACKEND", args.backend)
    env[f"{PACKAGE.upper()}_SCHEMA_PREFIX"] = args.prefix or f"bench_{secrets.token_hex(3)}_"
    with tempfile.TemporaryDirectory() as folder:
        project, python = prepare(Path(folder), args)
        command = [python, __file__, "--measure", *sys.argv[1:]]
        done = subprocess.run(command, env=env, cwd=project, check=False)
    sys.exit(done.returncode)


# ---- In the project's environment: fill the database, serve, measure.


def fill(package, jobs: int) -> None:
    """Declare every schema; give the first auto-populated table `jobs` jobs rows."""
    from importlib import import_module

    import datajoint as dj

    tables_of = import_module(f"{package.__name__}.toolkit").tables
    package.activate()
    tables = package.pipeline.auto_tables()
    first = tables[0]
    upstream = package.MODULES[0]
    entry = next(t for t in tables_of(upstream) if issubclass(t, dj.Manual))
    name = entry.heading.primary_key[0]
    fields = [a for a in entry.heading.secondary_attributes if not a.startswith("_")]
    entry.insert(
        [{name: i, **dict.fromkeys(fields, f"bench {i}")} for i in range(jobs)],
        skip_duplicates=True,
    )
    for table in tables:
        table.jobs.refresh()  # pending jobs for every key: `jobs` of them for the first
    connection = dj.conn()
    table_name = first.jobs.full_table_name
    for status, condition, extra in (
        ("error", 20, ", error_message = 'RuntimeError: bench failure'"),
        ("success", 3, ", completed_time = CURRENT_TIMESTAMP"),
        ("reserved", 50, ", host = 'bench-node', reserved_time = CURRENT_TIMESTAMP"),
    ):
        connection.query(
            f"UPDATE {table_name} SET status = '{status}'{extra} WHERE MOD({name}, {condition}) = 1"
        )
    connection.query(f"UPDATE {table_name} SET pid = 1000 + MOD({name}, 4) WHERE host <> ''")


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - started, body


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(args: argparse.Namespace) -> None:
    import importlib

    import datajoint as dj

    package = importlib.import_module(PACKAGE)
    dashboard = importlib.import_module(f"{PACKAGE}.toolkit.dashboard")
    started = time.perf_counter()
    try:
        fill(package, args.jobs)
        filled = time.perf_counter() - started
        results = serve_and_measure(dashboard, dj, args.scrapes)
    finally:
        for module in reversed(package.MODULES):
            module.schema.drop(prompt=False)
    report(args, filled, results)


def serve_and_measure(dashboard, dj, scrapes: int) -> dict:
    connection = dj.conn()
    sent: list[str] = []
    query = connection.query

    def counted(*args, **kwargs):
        sent.append(args[0])
        return query(*args, **kwargs)

    connection.query = counted
    refresher = dashboard.Refresher(period=3600)  # readings only when this bench asks
    sock = dashboard.bind("127.0.0.1", 0)
    server = dashboard.make_server(dashboard.create_app(False, 3600, None, refresher), sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if not refresher.wait(600):
        sys.exit("the dashboard made no first reading")
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        readings, reading_queries = [], []
        for _ in range(3):
            before = len(sent)
            readings.append(refresher.read().duration)
            reading_queries.append(len(sent) - before)
        if not refresher.snapshot.up:
            sys.exit(f"the database did not answer: {refresher.snapshot.error}")
        before = len(sent)
        metrics = [timed_get(base + "/metrics") for _ in range(scrapes)]
        status = [timed_get(base + "/api/status")[0] for _ in range(scrapes)]
        per_scrape = (len(sent) - before) / (2 * scrapes)
        together: list[float] = []

        def scraper() -> None:
            together.extend(timed_get(base + "/metrics")[0] for _ in range(scrapes // WORKERS))

        threads = [threading.Thread(target=scraper) for _ in range(WORKERS)]
        for each in threads:
            each.start()
        for each in threads:
            each.join()
        busy = threading.Event()

        def keep_reading() -> None:
            while not busy.is_set():
                refresher.read()

        reader = threading.Thread(target=keep_reading)
        reader.start()
        health = []
        for _ in range(scrapes):
            health.append(timed_get(base + "/healthz")[0])
            time.sleep(0.002)
        busy.set()
        reader.join()
    finally:
        server.should_exit = True
        thread.join(30)
        connection.query = query
    return {
        "reading": statistics.median(readings),
        "reading_queries": statistics.median(reading_queries),
        "per_scrape": per_scrape,
        "metrics": [seconds for seconds, _ in metrics],
        "status": status,
        "together": together,
        "healthz": health,
        "series": sum(1 for line in metrics[-1][1].splitlines() if not line.startswith(b"#")),
        "promtool": promtool(metrics[-1][1]),
    }


def promtool(body: bytes) -> str | None:
    """promtool's complaints about the metrics ('' when none), or None without promtool."""
    tool = shutil.which("promtool")
    if tool is None:
        return None
    done = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True, check=False)
    return (done.stdout + done.stderr).decode().strip() or ("" if done.returncode == 0 else "?")


def report(args: argparse.Namespace, filled: float, results: dict) -> None:
    ms = 1000.0
    median = statistics.median(results["metrics"])
    print(
        f"{args.schemas} schemas, {args.jobs} jobs rows, {dj_backend()}; filled in {filled:.0f} s;"
        f" /metrics has {results['series']} series"
    )
    print(
        f"one reading (what every scrape cost before): {results['reading']:.3f} s,"
        f" {results['reading_queries']:.0f} queries"
    )
    rows = [
        ("queries per scrape", results["per_scrape"], 0.0, "", "<="),
        ("/metrics median (ms)", median * ms, None, "", ""),
        ("/metrics p99 (ms)", percentile(results["metrics"], 0.99) * ms, 50.0, "", "<="),
        (
            f"/metrics p99, {WORKERS} at a time (ms)",
            percentile(results["together"], 0.99) * ms,
            200.0,
            "",
            "<=",
        ),
        ("/api/status p99 (ms)", percentile(results["status"], 0.99) * ms, 50.0, "", "<="),
        (
            "/healthz p99 during readings (ms)",
            percentile(results["healthz"], 0.99) * ms,
            50.0,
            "",
            "<=",
        ),
        ("reading / scrape (speed-up)", results["reading"] / median, SPEED_UP_GOAL, "x", ">="),
    ]
    print(f"{'measurement':<40} {'value':>10} {'goal':>10}  result")
    for name, value, goal, unit, way in rows:
        if goal is None:
            print(f"{name:<40} {value:>10.2f}")
            continue
        met = value <= goal if way == "<=" else value >= goal
        print(
            f"{name:<40} {value:>9.2f}{unit or ' '} {way}{goal:>7g}{unit or ' '}  "
            f"{'PASS' if met else 'MISS'}"
        )
    checked = results["promtool"]
    if checked is None:
        print(f"{'promtool check metrics':<40} {'(no promtool)':>10}")
    else:
        print(
            f"{'promtool check metrics':<40} {'clean' if not checked else 'problems':>10}"
            f" {'clean':>10}  {'PASS' if not checked else 'MISS: ' + json.dumps(checked)}"
        )
    ratio("a reading / a scrape of /metrics", results["reading"] / median, SPEED_UP_GOAL, "x",
          at_least=True)  # fmt: skip


def dj_backend() -> str:
    import datajoint as dj

    return str(dj.config.database.backend)


if __name__ == "__main__":
    main()
