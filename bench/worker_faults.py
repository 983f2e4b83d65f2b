"""Faults at random moments against a generated project's worker: counts of keys lost,
made twice or left reserved, of hangs and of wrong exit codes, over many trials.

    python bench/worker_faults.py [--trials 500] [--backends mysql,postgresql] [--seed N]
                                  [--deadline 30] [--tiny] [--venv PATH]

Renders a project, installs it with uv, adds a schema whose make() logs its calls
(src/<package>/work.py: bench/_common.py's WORK_MODULE, which the template's worker tests
use too) and
creates on each server an account with a password and rights on its own prefix only (as
the administrator: root on 127.0.0.1:3306, postgres on 127.0.0.1:5432, or the
--mysql-admin / --postgresql-admin settings). Then, per backend, runs the trials with the
project's Python (this file's `run` command, which the template's tests also use):

    <project python> worker_faults.py run PACKAGE --trials N --seed S --deadline SECONDS
    (environment: DJ_* of an account that is not the server's administrator, the package's
    schema prefix variable, WORK_LOG: a file for make()'s log)

Each trial enters a few keys, starts one or two programs -- a worker, a worker with
--processes 2 or 3, a looping worker (with or without --processes), `populate`, `populate
--processes 2` -- and at random moments kills database sessions of the account (KILL on
MariaDB, pg_terminate_backend on PostgreSQL), SIGKILLs a child of --processes, and sends
SIGTERM or SIGINT. After the programs exit, every key of the trial must be made once, or
be pending or in error with a program exiting non-zero; never reserved, never without a
job. A program that has not exited `--deadline` seconds after the last fault counts as a
hang (it is killed). Goal: 0 of every count but "re-made after a cut" (a make() cut by a
lost connection or a killed child is rolled back and made again: expected); the last line
is their sum per trial against that goal. A benchmark, not a test: it always exits 0.
--tiny: 2 trials per backend (what the template's own suite runs).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from _common import SERVERS, WORK_MODULE, add_schema, environment, prepare, ratio, venv_option

PACKAGE = "faults"
ADMINS = SERVERS  # the administrators who create and drop the trials' account
COUNTS = (
    "trials",
    "keys",
    "lost",
    "made twice",
    "left reserved",
    "hangs",
    "wrong exit",
    "tracebacks",
    "children left",
    "re-made after a cut",
)


# ---------------------------------------------------------------- the trials (project side)


class Trials:
    """The trials, run in the generated project's Python.

    The package is imported once; every program runs in a forked child (the code `python
    -m` runs, without an interpreter start each time). This process never opens a
    DataJoint connection (children would share it): it reads the tables and kills
    sessions through a driver connection of its own.
    """

    def __init__(self, package: str, deadline: float, seed: int) -> None:
        self.package = importlib.import_module(package)
        self.pipeline = self.package.pipeline  # what the package hands to the toolkit
        self.cli = importlib.import_module(f"{package}.toolkit.cli")
        self.worker = importlib.import_module(f"{package}.toolkit.worker")
        self.work = importlib.import_module(f"{package}.work")
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.output = Path(tempfile.mkdtemp(prefix="worker-faults-"))
        self.log = Path(os.environ["WORK_LOG"])
        self.backend = os.environ.get("DJ_BACKEND", "mysql")
        if os.environ.get("DJ_USER") in {"root", "postgres"}:
            raise SystemExit(
                "error: trials kill every session of their account: use one of its own"
            )
        self.names = json.loads(self.in_child(self.declare))
        self.db = self.connect()
        top = self.sql(f"SELECT max(subject_id) FROM {self.names[0]}")[0][0]
        self.next_key = (top or 0) + 1  # after keys an interrupted run left
        self.counts: Counter = Counter()
        self.failures: list[dict] = []

    # -- processes

    def fork(self, run, output: Path) -> int:
        """A child in a process group of its own running `run()` as a program would."""
        pid = os.fork()
        if pid:
            with contextlib.suppress(OSError):  # the child does it too: whichever is first
                os.setpgid(pid, pid)
            return pid
        code = 1
        try:
            os.setpgid(0, 0)
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(descriptor, 1)
            os.dup2(descriptor, 2)
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # where a hang is
            # As for a program killed before it set its handlers: the interpreter dies of
            # SIGINT too (after a KeyboardInterrupt traceback, which is not ours to count).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
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

    def in_child(self, run) -> str:
        """Run `run()` (which prints) in a child with a DataJoint connection of its own."""
        output = self.output / f"helper-{time.monotonic_ns()}.txt"
        pid = self.fork(run, output)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        text = output.read_text()
        if code != 0:
            raise SystemExit(f"helper failed ({code}): {text}")
        return text.strip().splitlines()[-1]

    def declare(self) -> int:
        self.package.activate()
        work = self.work.Work
        work.jobs.refresh()  # declares the jobs table
        subject = importlib.import_module(f"{self.package.__name__}.subject").Subject
        names = [subject.full_table_name, work.full_table_name, work.jobs.full_table_name]
        print(json.dumps(names))
        return 0

    def drop(self) -> int:
        self.package.activate()
        for module in reversed(self.package.MODULES):
            module.schema.drop(prompt=False)
        print("dropped")
        return 0

    # -- the database, through a driver connection of this process

    def connect(self):
        env = os.environ
        settings = {
            "host": env["DJ_HOST"],
            "user": env["DJ_USER"],
            "password": env.get("DJ_PASS", ""),
        }
        if self.backend == "postgresql":
            import psycopg2

            connection = psycopg2.connect(
                **settings,
                port=int(env.get("DJ_PORT", "5432")),
                dbname=env.get("DJ_DATABASE_NAME", "postgres"),
            )
            connection.autocommit = True
            return connection
        import pymysql

        return pymysql.connect(**settings, port=int(env.get("DJ_PORT", "3306")), autocommit=True)

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        with self.db.cursor() as cursor:
            cursor.execute(query, args or None)
            return list(cursor.fetchall()) if cursor.description else []

    def sessions(self) -> list[int]:
        """The account's other sessions: those of the programs."""
        if self.backend == "postgresql":
            query = (
                "SELECT pid FROM pg_stat_activity WHERE usename = current_user "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            query = (
                "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
                "AND user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
            )
        return [row[0] for row in self.sql(query)]

    def server_view(self) -> list:
        """What the account's sessions are doing, as the server sees them."""
        if self.backend == "postgresql":
            query = (
                "SELECT pid, state, wait_event_type, wait_event, left(query, 200) "
                "FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()"
            )
        else:
            query = (
                "SELECT id, command, time, state, left(info, 200) "
                "FROM information_schema.processlist WHERE id <> CONNECTION_ID()"
            )
        return [[str(value) for value in row] for row in self.sql(query)]

    def kill_a_session(self) -> bool:
        sessions = self.sessions()
        if not sessions:
            return False
        victim = self.rng.choice(sessions)
        try:
            if self.backend == "postgresql":
                self.sql("SELECT pg_terminate_backend(%s)", (victim,))
            else:
                self.sql(f"KILL {int(victim)}")
        except Exception:  # noqa: BLE001 -- the session ended meanwhile
            return False
        return True

    def enter_keys(self, count: int) -> list[int]:
        subject, _, jobs = self.names
        keys = list(range(self.next_key, self.next_key + count))
        self.next_key += count
        for key in keys:
            self.sql(
                f"INSERT INTO {subject} (subject_id, subject_name) VALUES (%s, %s)",
                (key, f"s{key}"),
            )
            self.sql(
                f"INSERT INTO {jobs} (subject_id, status, priority) VALUES (%s, 'pending', 5)",
                (key,),
            )
        return keys

    def outcome(self, keys: list[int]) -> tuple[set[int], dict[int, str]]:
        _, work, jobs = self.names
        low, high = keys[0], keys[-1]
        made = {
            row[0]
            for row in self.sql(
                f"SELECT subject_id FROM {work} WHERE subject_id BETWEEN %s AND %s", (low, high)
            )
        }
        statuses = self.sql(
            f"SELECT subject_id, status FROM {jobs} WHERE subject_id BETWEEN %s AND %s", (low, high)
        )
        return made, {key: str(status) for key, status in statuses}

    def set_aside(self, keys: list[int]) -> None:
        """Jobs a trial left are ignored: later trials must not make them."""
        _, _, jobs = self.names
        self.sql(
            f"UPDATE {jobs} SET status = 'ignore' WHERE subject_id BETWEEN %s AND %s",
            (keys[0], keys[-1]),
        )

    # -- one trial

    def program(self, loop: bool):
        """A way an operator runs the pipeline: (description, processes, run)."""
        quick = ["--retries", "10", "--backoff", "0.05", "--no-progress"]
        kind = self.rng.choice(["worker", "worker", "populate"]) if not loop else "worker"
        processes = self.rng.choice([1, 1, 2, 3]) if kind == "worker" else self.rng.choice([1, 2])
        if kind == "worker":
            argv = [
                "--schema",
                "work",
                "--log-level",
                "INFO",
                *quick,
                "--processes",
                str(processes),
            ]
            if loop:
                argv += ["--loop", "0.2"]
            run = lambda: self.worker.main(self.pipeline, argv)
        else:
            argv = ["populate", "Work", *quick, "--processes", str(processes)]
            run = lambda: self.cli.main(self.pipeline, argv)
        name = f"{kind}{' --loop' if loop else ''}{f' --processes {processes}' if processes > 1 else ''}"
        return name, processes, run

    def children_of(self, pid: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
        return found

    def trial(self, number: int) -> None:
        rng = self.rng
        seconds = rng.choice([0.002, 0.01, 0.03])
        os.environ["WORK_SECONDS"] = str(seconds)
        os.environ["WORK_FAIL"] = "none"
        keys = self.enter_keys(rng.randint(6, 30))
        loop = rng.random() < 0.25
        programs = []
        for index in range(rng.choice([1, 1, 2])):
            name, processes, run = self.program(loop)
            output = self.output / f"trial-{number}-{index}.txt"
            programs.append(
                {
                    "name": name,
                    "processes": processes,
                    "pid": self.fork(run, output),
                    "output": output,
                    "code": None,
                    "stop": None,
                    "killed child": False,
                    "caught": None,
                }
            )
        # Faults at random moments of the expected run (start-up takes about 0.3 s).
        span = 0.4 + len(keys) * seconds * 1.5 / sum(p["processes"] for p in programs)
        faults = [("session", rng.uniform(0, span)) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
        for program in programs:
            if program["processes"] > 1 and rng.random() < 0.3:
                faults.append(("child", rng.uniform(0.2, span)))
            if loop or rng.random() < 0.4:
                faults.append(("stop", rng.uniform(0, span * (1.5 if loop else 1))))
        started = time.monotonic()
        cut = False  # a fault that may cut a make() short: it is then made again
        for fault, when in sorted(faults, key=lambda item: item[1]):
            time.sleep(max(0.0, started + when - time.monotonic()))
            self.reap(programs)
            if fault == "session":
                cut |= self.kill_a_session()
            elif fault == "child":
                live = [p for p in programs if p["processes"] > 1 and p["code"] is None]
                children = self.children_of(live[0]["pid"]) if live else []
                if children:
                    os.kill(rng.choice(children), signal.SIGKILL)
                    live[0]["killed child"] = cut = True  # unless it had just exited
            else:
                live = [p for p in programs if p["code"] is None and p["stop"] is None]
                if live:
                    program = rng.choice(live)
                    program["stop"] = rng.choice([signal.SIGTERM, signal.SIGINT])
                    program["caught"] = self.catches(program["pid"], program["stop"])
                    os.kill(program["pid"], program["stop"])
        deadline = time.monotonic() + self.deadline
        while self.reap(programs) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.judge(programs, keys, cut)

    @staticmethod
    def catches(pid: int, signum: int) -> bool:
        """Has the program set a handler for `signum` yet (else the signal kills it)?"""
        status = Path(f"/proc/{pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)

    def reap(self, programs: list[dict]) -> bool:
        """Collect the programs that exited; True while some still run."""
        running = False
        for program in programs:
            if program["code"] is None:
                done, status = os.waitpid(program["pid"], os.WNOHANG)
                if done:
                    program["code"] = os.waitstatus_to_exitcode(status)
                else:
                    running = True
        return running

    def judge(self, programs: list[dict], keys: list[int], cut: bool) -> None:
        counts = Counter(trials=1, keys=len(keys))
        hung = [program for program in programs if program["code"] is None]
        server = self.server_view() if hung else []
        for program in hung:
            counts["hangs"] += 1
            os.killpg(program["pid"], signal.SIGUSR1)  # its stacks, and its children's
        time.sleep(0.5 if hung else 0.05)  # children of a dead parent are on their way out
        for program in hung:
            os.killpg(program["pid"], signal.SIGKILL)
            os.waitpid(program["pid"], 0)
            program["code"] = "hung"
        for program in programs:
            if program in hung:
                continue
            try:
                os.killpg(program["pid"], 0)
            except ProcessLookupError:
                continue
            counts["children left"] += 1
            os.killpg(program["pid"], signal.SIGKILL)
        made, jobs = self.outcome(keys)
        codes = [program["code"] for program in programs]
        failed = any(code != 0 for code in codes)
        for key in keys:
            status = jobs.get(key)
            if status == "reserved":
                counts["left reserved"] += 1
            elif key not in made and (status is None or not failed):
                counts["lost"] += 1
        calls = Counter()
        ends = Counter()
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            key, _, event = line.split()
            (calls if event == "start" else ends)[int(key)] += 1
        twice = sum(1 for key in keys if ends[key] > 1)
        counts["made twice" if not cut else "re-made after a cut"] += twice
        for program in programs:
            output = program["output"]  # none when a signal came before the child opened it
            text = output.read_text(errors="replace") if output.exists() else ""
            tracebacks = text.count("Traceback (most recent call last)")
            counts["tracebacks"] += tracebacks
            if not self.expected_code(program, text):
                counts["wrong exit"] += 1
            if tracebacks or not self.expected_code(program, text):
                program["text"] = text[-3000:]
        self.set_aside(keys)
        if any(counts[name] for name in COUNTS[2:-1]):
            self.failures.append(
                {
                    "counts": dict(counts),
                    "programs": [
                        {
                            k: v
                            for k, v in p.items()
                            if k in ("name", "code", "stop", "caught", "killed child", "text")
                        }
                        for p in programs
                    ],
                    "made": len(made & set(keys)),
                    "sessions": server,
                    "jobs": dict(Counter(jobs.values())),
                }
            )
        self.counts.update(counts)

    @staticmethod
    def expected_code(program: dict, text: str) -> bool:
        """Stopped: 128 + the signal. Else 1 after a killed child, 0 otherwise. A program
        that had finished when the signal came may exit as it would have, or die of it."""
        code, stop = program["code"], program["stop"]
        # A child SIGKILLed as it was exiting had made its keys: only a death its parent
        # saw (and logged) must give exit 1.
        natural = 1 if program["killed child"] and "died of SIGKILL" in text else 0
        finished = "worker finished" in text or "Work: " in text
        if stop is not None and not program["caught"]:  # not started yet (or just done)
            return code in (128 + stop, -stop) or (finished and code == natural)
        if stop is not None:
            return code == 128 + stop or (finished and code in (natural, -stop))
        return code == natural

    def run(self, trials: int) -> dict:
        started = time.monotonic()
        try:
            for number in range(trials):
                self.trial(number)
                if (number + 1) % 50 == 0:
                    print(f"{number + 1} trials, {dict(self.counts)}", file=sys.stderr, flush=True)
        finally:
            self.db.close()
            self.in_child(self.drop)
        if not self.failures:  # else the programs' output stays, for a look
            shutil.rmtree(self.output, ignore_errors=True)
        return {
            "backend": self.backend,
            "seconds": time.monotonic() - started,
            "counts": {name: self.counts[name] for name in COUNTS},
            "failures": self.failures[:10],
            "outputs": str(self.output) if self.failures else None,
        }


def run_trials(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="worker_faults.py run")
    parser.add_argument("package")
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=30)
    args = parser.parse_args(argv)
    print(json.dumps(Trials(args.package, args.deadline, args.seed).run(args.trials)))


# ---------------------------------------------------------------- the bench (template side)


def prepare_project(work: Path, venv: Path | None) -> tuple[Path, str]:
    """A rendered project installed with its dev extra, with the Work schema."""
    answers = ["object_store=none"]
    project, python = prepare(work, PACKAGE, "Worker Faults", *answers, extras="dev", venv=venv)
    add_schema(project, python, PACKAGE, "work", WORK_MODULE)
    return project, python


def administer(argv: list[str]) -> None:
    """`admin BACKEND ADMIN-JSON create|drop USER [PASSWORD]`, in the project's Python (its
    drivers): an account with a password and rights on `USER_*` schemas only, or its end."""
    backend, settings, action, user, *password = argv
    admin = json.loads(settings)
    if backend == "postgresql":
        import psycopg2

        connection = psycopg2.connect(
            host=admin["DJ_HOST"],
            port=int(admin["DJ_PORT"]),
            user=admin["DJ_USER"],
            password=admin["DJ_PASS"],
            dbname="postgres",
        )
        connection.autocommit = True
        statements = (
            [f"CREATE ROLE {user} LOGIN PASSWORD %s", f"CREATE DATABASE {user} OWNER {user}"]
            if action == "create"
            else [f"DROP DATABASE IF EXISTS {user} WITH (FORCE)", f"DROP ROLE IF EXISTS {user}"]
        )
    else:
        import pymysql

        connection = pymysql.connect(
            host=admin["DJ_HOST"],
            port=int(admin["DJ_PORT"]),
            user=admin["DJ_USER"],
            password=admin["DJ_PASS"],
            autocommit=True,
        )
        if action == "create":
            statements = [
                f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s",  # %% -> %
                f"GRANT ALL PRIVILEGES ON `{user}\\_%`.* TO '{user}'@'%'",
            ]
        else:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
                    (f"{user}\\_%",),
                )
                schemas = [row[0] for row in cursor.fetchall()]
            statements = [f"DROP DATABASE `{name}`" for name in schemas]
            statements.append(f"DROP USER IF EXISTS '{user}'@'%'")
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, tuple(password) if "%s" in statement else None)
    finally:
        connection.close()


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        run_trials(sys.argv[2:])
        return
    if sys.argv[1:2] == ["admin"]:
        administer(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500, help="per backend (default 500)")
    parser.add_argument("--backends", default="mysql,postgresql")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=30, help="seconds after the last fault")
    parser.add_argument("--tiny", action="store_true", help="2 trials per backend")
    venv_option(parser)
    for backend in ADMINS:
        parser.add_argument(
            f"--{backend}-admin", metavar="JSON", help="DJ_* settings of the administrator"
        )
    args = parser.parse_args()
    if args.tiny:
        args.trials = 2
    seed = secrets.randbelow(10**6) if args.seed is None else args.seed
    results = []
    with tempfile.TemporaryDirectory() as folder:
        project, python = prepare_project(Path(folder), args.venv)
        for backend in args.backends.split(","):
            given = getattr(args, f"{backend}_admin")
            admin = json.loads(given) if given else ADMINS[backend]
            user, password = f"faults{secrets.token_hex(3)}", secrets.token_urlsafe(12)
            manage = [python, __file__, "admin", backend, json.dumps(admin)]
            subprocess.run([*manage, "create", user, password], check=True)
            env = {**admin, "DJ_USER": user, "DJ_PASS": password, "DJ_BACKEND": backend}
            if backend == "postgresql":
                env["DJ_DATABASE_NAME"] = user
            run_env = environment(**env, WORK_LOG=str(Path(folder) / f"{backend}.log"))
            run_env[f"{PACKAGE.upper()}_SCHEMA_PREFIX"] = f"{user}_"
            command = [python, __file__, "run", PACKAGE, "--trials", str(args.trials)]
            command += ["--seed", str(seed), "--deadline", str(args.deadline)]
            try:
                done = subprocess.run(
                    command,
                    cwd=project,
                    env=run_env,
                    stdout=subprocess.PIPE,
                    text=True,
                    check=False,
                )
            finally:
                subprocess.run([*manage, "drop", user], check=False)
            if done.returncode != 0:
                print(f"{backend}: the trials failed ({done.returncode})")
                continue
            results.append(json.loads(done.stdout.splitlines()[-1]))
    print(f"seed {seed}; goal: 0 of every count but the last")
    print(
        f"{'backend':<11}"
        + "".join(f"{name:>{max(len(name), 6) + 2}}" for name in COUNTS)
        + f"{'seconds':>9}"
    )
    for result in results:
        counts = result["counts"]
        print(
            f"{result['backend']:<11}"
            + "".join(f"{counts[name]:>{max(len(name), 6) + 2}}" for name in COUNTS)
            + f"{result['seconds']:>9.0f}"
        )
        for failure in result["failures"]:
            print(json.dumps(failure)[:3000])
    trials = sum(result["counts"]["trials"] for result in results)
    faults = sum(result["counts"][name] for result in results for name in COUNTS[2:-1])
    if trials and len(results) == len(args.backends.split(",")):
        ratio("faults per trial (lost, twice, reserved, hangs, exits, ...)", faults / trials, 0)


if __name__ == "__main__":
    main()
