"""Worker: populate every auto-populated table, upstream first, with job reservation.

Start any number of workers, on any number of machines, against one database:
DataJoint's jobs tables (``populate(reserve_jobs=True)``) give each key to one
worker only.

    python -m <package>.worker                  # one pass over every table, then exit
    python -m <package>.worker --loop 60        # a pass every 60 s until stopped
    python -m <package>.worker --schema ephys   # only the tables of some schemas
    python -m <package>.worker --processes 4    # four worker processes, each its own connection
    python -m <package>.worker --priority 3     # only jobs of priority 3 or more urgent

Exit status: 0 when every key tried was made; 1 when a make() failed (logged with
its key, and recorded in the table's jobs table: see ``python -m <package> status``)
or the database stayed unreachable; 2 on a usage error; 128 + N when stopped by
signal N (143 for SIGTERM, 130 for SIGINT).

Stopping: SIGTERM or SIGINT only asks for a stop. The signal is held while a key is
being made, so no query is ever cut in the middle: the key in progress is finished
(committed, its job closed), then the worker exits. A make() that runs for long can
call ``check_stop()`` at a safe point of its own: the stop then rolls its transaction
back and puts its job back to pending for any worker to take. A worker killed with
SIGKILL cannot do either: the server rolls its transaction back, but its key stays
reserved until a worker started with ``--orphan-timeout SECONDS`` (longer than your
slowest make()) re-queues reservations older than that, or until
``python -m <package> status --release-orphans SECONDS`` does it once.

Transient database errors -- deadlock, lock wait timeout, lost connection -- are
retried with exponential backoff (``--retries``, ``--backoff``): the key goes back to
pending, scheduled after the delay, and the connection is re-established. Before it
leaves a table, and when it stops, the worker re-queues any reservation of its own
that no key in progress explains, so no error strands a key.

``--processes N`` forks N children, each running this worker with a connection of its
own; the parent only supervises. It forwards SIGTERM and SIGINT to them, and they stop
when it dies, even by SIGKILL. A child that dies (SIGKILL, out of memory) has its
reservations re-queued by the parent, which then exits 1; with ``--loop`` the others are
stopped too, for the service manager to restart the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NoReturn

import datajoint as dj
from datajoint import autopopulate
from tqdm import tqdm

from . import alerts, health, operations
from .project import Pipeline, pipeline, use
from .utils import datajoint_logs_to_stderr

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
KEYS_PER_ROUND = 64  # pending keys fetched at once, then handed to populate() in chunks
STOP_WITHIN = 0.5  # seconds: a chunk of quick keys is sized so that a stop waits no longer

# MySQL/MariaDB error codes worth trying again: lock wait timeout, deadlock, server gone
# away, lost connection, connection killed, server shutting down, cannot connect.
TRANSIENT_MYSQL_CODES = {1205, 1213, 2006, 2013, 1927, 1053, 2003}
# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available, query
# cancelled, admin shutdown / terminated, crash shutdown, cannot connect now, connection errors.
TRANSIENT_PG_CODES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"}
# What PostgreSQL says when it refuses a login (psycopg2 gives no SQLSTATE then).
REFUSED_LOGIN = ("authentication failed", "does not exist", "pg_hba.conf", "not permitted")


class StopRequested(Exception):
    """Raised by check_stop() inside make() (the key is rolled back and re-queued), and
    by connect() when a stop comes while it waits to connect again."""


_stop_signal: int | None = None  # the first stop signal received
_parent: int | None = None  # in a child of --processes N: the worker that started it
PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal for this process when its parent dies


def _request_stop(signum: int, frame: object) -> None:
    """The signal handler: only remember the request (never raise in the middle of a query)."""
    global _stop_signal
    if _stop_signal is None:
        _stop_signal = signum


def stop_requested() -> bool:
    """Has SIGTERM or SIGINT asked this worker to stop (also while the signals are held)?

    A child of --processes N also stops when the worker that started it is gone.
    """
    if _parent is not None and _stop_signal is None and os.getppid() != _parent:
        _request_stop(signal.SIGTERM, None)
    return _stop_signal is not None or bool(signal.sigpending() & set(STOP_SIGNALS))


def check_stop() -> None:
    """Call at a safe point of a long make(): stops there if a stop was asked for.

    The key's transaction is rolled back and its job put back to pending.
    """
    if stop_requested():
        raise StopRequested("the worker was asked to stop")


@contextlib.contextmanager
def stop_handlers() -> Iterator[None]:
    """SIGTERM and SIGINT set a flag for the duration (they never raise); re-entrant."""
    global _stop_signal
    if signal.getsignal(signal.SIGTERM) is _request_stop:
        yield
        return
    _stop_signal = None
    previous = {signum: signal.signal(signum, _request_stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while a key is made; they arrive (to our flag) afterwards.

    DataJoint's populate() installs a SIGTERM handler that raises SystemExit wherever
    the program is -- possibly inside a query, breaking the connection. Held signals
    never reach it: they are delivered once populate() has put our handler back.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _KeepStopHandlers:
    """The signal module as datajoint.autopopulate sees it: while our stop handlers are
    in place, its populate() may not replace them with one that raises SystemExit.

    Holding the signals (above) is not enough on its own: the kernel may deliver a
    signal to another thread that does not hold it, and Python then runs whatever
    handler is current in the main thread.
    """

    def __getattr__(self, name: str) -> object:
        return getattr(signal, name)

    @staticmethod
    def signal(signum: int, handler: object) -> object:
        if signum in STOP_SIGNALS and signal.getsignal(signum) is _request_stop:
            return _request_stop
        return signal.signal(signum, handler)  # type: ignore[arg-type]


autopopulate.signal = _KeepStopHandlers()  # type: ignore[assignment]


def is_transient(error: BaseException) -> bool:
    """Deadlock, lock wait timeout or lost connection: worth trying again after a pause.

    So is an error raised while handling one: DataJoint's reconnection can fail that
    way (a session lost during its first query gives an AttributeError). A server that
    refuses our login is not: psycopg2 gives that no SQLSTATE, the server's words tell.
    """
    if any(words in str(error) for words in REFUSED_LOGIN):
        return False
    cause = error.__cause__ or error.__context__
    return _transient(error) or (cause is not None and is_transient(cause))


def _transient(error: BaseException) -> bool:
    if isinstance(error, dj.errors.LostConnectionError):
        return True
    code = error.args[0] if error.args else None
    if isinstance(code, int):  # a MySQL/MariaDB error
        return code in TRANSIENT_MYSQL_CODES
    pgcode = getattr(error, "pgcode", None)
    if pgcode in TRANSIENT_PG_CODES or (pgcode or "").startswith("08"):
        return True
    # psycopg2 reports a connection closed under it without a code
    return type(error).__name__ in {"OperationalError", "InterfaceError"} and pgcode is None


@dataclass
class Options:
    """How to populate: the worker's command-line options."""

    max_calls: int | None = None
    orphan_timeout: float | None = None
    processes: int = 1
    priority: int | None = None
    retries: int = 5
    backoff: float = 1.0
    progress: bool = False


@dataclass
class Outcome:
    """What a pass did."""

    made: int = 0
    failed: int = 0
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (made, failed)


class DatabaseUnavailable(Exception):
    """Transient errors persisted beyond the retries."""


def schema_of(table: type[dj.Table]) -> str:
    """The schema module a table belongs to, e.g. 'ephys'."""
    return table.__module__.rpartition(".")[2]


def select_tables(tables: Sequence[str], schemas: Sequence[str]) -> list[type[dj.Table]]:
    """The auto-populated tables to run, in dependency order; unknown names are an error."""
    available = pipeline.auto_tables()
    unknown = [name for name in tables if name not in {t.__name__ for t in available}]
    unknown += [f"schema {name}" for name in schemas if name not in set(map(schema_of, available))]
    if unknown:
        known = ", ".join(table.__name__ for table in available)
        raise ValueError(f"unknown {', '.join(unknown)} (auto-populated tables: {known})")
    return [
        table
        for table in available
        if (not tables or table.__name__ in tables) and (not schemas or schema_of(table) in schemas)
    ]


def requeue(table: dj.Table, keys: list[dict], delay: float = 0) -> None:
    """Put jobs back to pending, schedulable after `delay` seconds (for every worker)."""
    if not keys:
        return
    jobs = table.jobs
    for key in keys:
        (jobs & key).delete_quick()
    jobs.refresh(keys, delay=delay)


def release_mine(table: dj.Table, pid: int | None = None) -> int:
    """Re-queue the reservations this process (or child `pid`) holds, which no key in
    progress explains: an error cut them short, or the process is gone."""
    mine = table.jobs.reserved & {"host": platform.node(), "pid": pid or os.getpid()}
    keys = mine.keys()
    requeue(table, keys)
    return len(keys)


def reconnect(connection: dj.Connection) -> None:
    """A new session (DataJoint records its id with each reservation it makes).

    A transaction the old session had open is no more: DataJoint must know, or it
    refuses to populate ("Populate cannot be called during a transaction").
    """
    connection.connect()
    connection.connection_id = connection.adapter.get_connection_id(connection._conn)
    connection.cancel_transaction()


def reconnect_all(tables: list[type[dj.Table]], options: Options) -> None:
    """New sessions for the tables, trying again after transient errors as for a key."""
    for attempt in range(1, options.retries + 2):
        try:
            for connection in _connections(tables):
                reconnect(connection)
            return
        except Exception as error:
            if not is_transient(error) or attempt > options.retries:
                raise
            time.sleep(Populator(options).backoff(attempt))


def pending_keys(table: dj.Table, priority: int | None) -> list[dict]:
    """A round of pending keys, most urgent first, shuffled within each priority.

    Shuffling spreads concurrent workers over different keys, so they do not all
    race for the same reservation.
    """
    jobs = table.jobs
    pending = jobs.pending & "scheduled_time <= CURRENT_TIMESTAMP(3)"
    if priority is not None:
        pending &= f"priority <= {int(priority)}"
    rows = pending.proj("priority").to_dicts(
        order_by="priority ASC, scheduled_time ASC", limit=KEYS_PER_ROUND
    )
    random.shuffle(rows)
    rows.sort(key=lambda row: row["priority"])  # stable: shuffled within a priority
    return [{name: row[name] for name in jobs.primary_key} for row in rows]


class Populator:
    """Populates tables key by key, stopping between keys and retrying transient errors.

    Nothing an error interrupts is left behind: keys to retry wait in `requeues` until
    the database takes them back, and before a table is left this process's own
    reservations are re-queued (a reservation whose answer was lost with the connection
    looks taken to DataJoint, which then skips the key).
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.attempts: dict[tuple[str, str], int] = {}
        self.retry_due: dict[str, float] = {}  # table: when its last re-queued key is due
        self.requeues: dict[str, list[tuple[dict, float]]] = {}  # table: (key, delay) to put back
        self.failures_in_a_row = 0
        self.seconds_per_key = 0.0  # measured: wall time of a populate() call per key made

    def backoff(self, attempt: int) -> float:
        """Exponential, capped at a minute, with jitter so workers do not retry in step."""
        return min(60.0, self.options.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def pause(self, seconds: float) -> None:
        """Sleep, but wake up for a stop request."""
        deadline = time.monotonic() + seconds
        while not stop_requested() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def chunk_size(self) -> int:
        """Keys per populate() call: one for slow make()s, more for quick ones.

        A stop waits for the chunk in progress, so chunks last about STOP_WITHIN seconds;
        each populate() call costs a few queries of its own, so quick keys go together.
        """
        quick = int(STOP_WITHIN / self.seconds_per_key) if self.seconds_per_key else 1
        return max(1, min(quick, KEYS_PER_ROUND))

    def populate_once(self, table: dj.Table, keys: list[dict]) -> dict:
        """One DataJoint populate() call over `keys`, with the stop signals held."""
        with signals_held():
            return table.populate(
                keys if len(keys) > 1 else keys[0],
                reserve_jobs=True,
                suppress_errors=True,
                return_exception_objects=True,
                max_calls=len(keys),
                priority=self.options.priority,
                refresh=False,
            )

    def settle(self, table: dj.Table) -> int:
        """Put back the keys errors left behind; returns how many reservations were freed."""
        waiting = self.requeues.get(type(table).__name__, [])
        while waiting:
            key, delay = waiting[0]
            requeue(table, [key], delay=delay)
            waiting.pop(0)
        return release_mine(table)

    def handle_errors(self, table: dj.Table, errors: list) -> tuple[int, bool]:
        """Log failed keys; re-queue stopped and transient ones. Returns (failed, stop)."""
        failed, stop = 0, False
        name = type(table).__name__
        waiting = self.requeues.setdefault(name, [])
        for key, error in errors:
            key = {attr: key[attr] for attr in table.jobs.primary_key}
            if isinstance(error, StopRequested):
                waiting.append((key, 0))
                stop = True
                continue
            attempt = self.attempts.get((name, repr(key)), 0) + 1
            if is_transient(error) and attempt <= self.options.retries:
                self.attempts[(name, repr(key))] = attempt
                delay = self.backoff(attempt)
                log.warning(
                    "%s %s: %s: %s; retry %d of %d in %.1f s",
                    name,
                    key,
                    type(error).__name__,
                    error,
                    attempt,
                    self.options.retries,
                    delay,
                )
                waiting.append((key, delay))
                self.retry_due[name] = max(self.retry_due.get(name, 0), time.monotonic() + delay)
                continue
            log.error("%s %s failed: %s: %s", name, key, type(error).__name__, error)
            failed += 1
        self.settle(table)
        return failed, stop

    def table(self, table_class: type[dj.Table], budget: int | None, outcome: Outcome) -> None:
        """Populate one table until no key is left, the budget is spent or a stop is asked."""
        name = table_class.__name__
        table = table_class()  # one instance: its jobs table is looked up once
        made, failed = outcome.counts.get(name, (0, 0))
        if self.settle(table):
            log.warning("%s: re-queued the reservations a lost connection left", name)
        if self.options.orphan_timeout:
            orphans = table.jobs.refresh(orphan_timeout=self.options.orphan_timeout)["orphaned"]
            if orphans:
                log.warning("%s: re-queued %d orphaned reservation(s)", name, orphans)
        else:
            table.jobs.refresh()
        bar = None
        if self.options.progress:
            bar = tqdm(total=table.progress()[0], desc=name, unit="key")
        try:
            while not stop_requested() and (budget is None or made + failed < budget):
                keys = pending_keys(table, self.options.priority)
                if budget is not None:
                    keys = keys[: budget - made - failed]
                if not keys:
                    if self.settle(table):
                        continue  # reservations a lost answer left: their keys are pending again
                    due = self.retry_due.pop(name, None)
                    if due is None:
                        break
                    self.pause(due - time.monotonic() + 0.05)  # a retry is scheduled: wait
                    continue
                while keys and not stop_requested():
                    chunk, keys = keys[: self.chunk_size()], keys[self.chunk_size() :]
                    started = time.monotonic()
                    result = self.populate_once(table, chunk)
                    done = result["success_count"] + len(result["error_list"])
                    if done:  # keys other workers took first cost next to nothing
                        self.seconds_per_key = (time.monotonic() - started) / done
                    self.failures_in_a_row = 0
                    new_failures, stop = self.handle_errors(table, result["error_list"])
                    made += result["success_count"]
                    failed += new_failures
                    outcome.made += result["success_count"]
                    outcome.failed += new_failures
                    outcome.counts[name] = (made, failed)
                    if bar is not None:
                        bar.update(result["success_count"] + new_failures)
                    if stop:
                        return
            self.settle(table)
        finally:
            if bar is not None:
                bar.close()

    def run_pass(self, tables: list[type[dj.Table]]) -> Outcome:
        """Populate each table once, upstream first."""
        outcome = Outcome()
        for table in tables:
            budget = self.options.max_calls
            if budget is not None:
                budget -= outcome.made + outcome.failed
            if stop_requested() or (budget is not None and budget <= 0):
                break
            while not stop_requested():
                try:
                    self.table(table, budget, outcome)
                    break
                except Exception as error:
                    if not is_transient(error):
                        raise
                    self.failures_in_a_row += 1
                    if self.failures_in_a_row > self.options.retries:
                        raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
                    delay = self.backoff(self.failures_in_a_row)
                    log.warning(
                        "%s: %s: %s; reconnecting in %.1f s",
                        table.__name__,
                        type(error).__name__,
                        error,
                        delay,
                    )
                    self.pause(delay)
                    with contextlib.suppress(Exception):  # else the next try meets the error
                        reconnect(table.connection)
                    # the next self.table() re-queues what the error left behind
            made, failed = outcome.counts.get(table.__name__, (0, 0))
            if made or failed:
                log.info("%s: %d made, %d failed", table.__name__, made, failed)
        return outcome

    def leftovers(self, tables: list[type[dj.Table]]) -> bool:
        """After a stop or an error: put back what is left; False if some could not be."""
        tries = min(self.options.retries, 2) + 1  # a few: a stop is waiting
        for attempt in range(1, tries + 1):
            try:
                for table in tables:
                    self.settle(table())
                return True
            except Exception as error:  # noqa: BLE001 -- whatever the server says, the exit is 1
                if not is_transient(error) or attempt == tries:
                    log.error(
                        "could not re-queue this worker's keys: %s: %s", type(error).__name__, error
                    )
                    return False
                time.sleep(self.backoff(attempt))
                with contextlib.suppress(Exception):  # else the next try meets the error
                    for connection in _connections(tables):
                        reconnect(connection)
        return False


def exit_code(code: int) -> int:
    """`code`, or 128 + N when a stop signal came meanwhile, even too late to stop anything."""
    return stopped_exit_code() if stop_requested() else code


def stopped_exit_code() -> int:
    """128 + the signal that stopped us (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + (_stop_signal or signal.SIGTERM)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=pipeline.worker_command,
        description="Populate the pipeline's tables with job reservation.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    mode.add_argument(
        "--loop", type=float, metavar="SECONDS", help="repeat, sleeping between passes"
    )
    parser.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    parser.add_argument(
        "--schema", action="append", default=[], help="only this schema (repeatable)"
    )
    add_populate_options(parser)
    parser.add_argument(
        "--orphan-timeout",
        type=float,
        metavar="SECONDS",
        help="re-queue reservations older than this (workers that were killed)",
    )
    parser.add_argument(
        "--alerts",
        action="store_true",
        help='after each pass, report new errors as `watch` does ("alerts" in datajoint.json)',
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def add_populate_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the worker and `python -m <package> populate`."""
    parser.add_argument(
        "--max-calls", type=positive_int, metavar="N", help="at most N keys per pass"
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="populate(processes=N): N forked processes (default 1)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="only jobs of priority N or more urgent (lower numbers first; default all)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="tries again after a deadlock, lock timeout or lost connection (default 5)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="first retry delay, doubled each time up to 60 s (default 1)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bar (default: on a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        max_calls=args.max_calls,
        orphan_timeout=getattr(args, "orphan_timeout", None),
        processes=args.processes,
        priority=args.priority,
        retries=args.retries,
        backoff=args.backoff,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )


def populate(
    tables: list[type[dj.Table]],
    options: Options,
    loop: float | None = None,
    after_pass: Callable[[], None] | None = None,
) -> tuple[int, Outcome]:
    """Run passes over `tables` until done (or forever with `loop`); returns (exit code, last pass).

    `after_pass` runs after each pass (the worker's alerts). With `options.processes`
    above 1, the passes run in that many child processes (see `populate_in_children`).

    Must run in the main thread: it handles SIGTERM and SIGINT.
    """
    if options.processes > 1:
        with stop_handlers():
            return populate_in_children(tables, options, loop, after_pass)
    populator = Populator(options)
    errors = 0
    outcome = Outcome()
    with stop_handlers():  # already in place when the caller installed them first
        try:
            while not stop_requested():
                outcome = populator.run_pass(tables)
                errors += outcome.failed
                if after_pass is not None:
                    after_pass()
                if loop is None:
                    break
                if not (outcome.made or outcome.failed):
                    populator.pause(loop)
        except DatabaseUnavailable as error:
            log.error("database unavailable, giving up: %s", error)
            populator.leftovers(tables)
            return 1, outcome
        except dj.DataJointError as error:
            log.error("%s: %s", type(error).__name__, error)
            populator.leftovers(tables)
            return 1, outcome
        except BaseException:
            populator.leftovers(tables)
            raise
        if stop_requested():
            settled = populator.leftovers(tables)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # deliver a held signal
            name = signal.Signals(_stop_signal or signal.SIGTERM).name
            if settled:
                log.warning("stopped by %s; the key in progress was finished or re-queued", name)
            return stopped_exit_code(), outcome
    return (1 if errors else 0), outcome


def _connections(tables: list[type[dj.Table]]) -> list[dj.Connection]:
    """The tables' database connections, each once (usually one)."""
    return list({id(table.connection): table.connection for table in tables}.values())


def _stop_with_parent(parent: int) -> None:
    """In a child: stop (as on SIGTERM) when the worker that started it dies.

    Linux sends the signal itself (prctl PR_SET_PDEATHSIG), even when the parent is
    killed with SIGKILL; elsewhere stop_requested() notices the new parent process.
    """
    global _parent
    _parent = parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    stop_requested()  # the parent may have died before prctl


def _run_child(
    tables: list[type[dj.Table]],
    options: Options,
    loop: float | None,
    after_pass: Callable[[], None] | None,
    parent: int,
    report: int,
) -> NoReturn:
    """A child of --processes N: the one-process worker on a connection of its own.

    Writes its counts to the `report` pipe and exits with the worker's exit status,
    never returning into the caller's code.
    """
    code = 1
    try:
        _stop_with_parent(parent)
        reconnect_all(tables, options)
        code, outcome = populate(tables, options, loop, after_pass)
        os.write(report, json.dumps(outcome.counts).encode())
    except BaseException as error:  # noqa: BLE001 -- the child must reach os._exit
        log.error("worker process %d: %s: %s", os.getpid(), type(error).__name__, error)
    finally:
        logging.shutdown()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def populate_in_children(
    tables: list[type[dj.Table]],
    options: Options,
    loop: float | None = None,
    after_pass: Callable[[], None] | None = None,
) -> tuple[int, Outcome]:
    """--processes N: fork N one-process workers and wait for them.

    The parent holds no connection while they run. It forwards a stop signal to them;
    when one dies of anything else (SIGKILL, out of memory) it re-queues that child's
    reservations, stops the others when looping, and exits 1. Returns (exit code,
    the children's counts added up).
    """
    connections = _connections(tables)
    for connection in connections:
        with contextlib.suppress(Exception):  # closed already is as good
            connection.close()  # children open their own: none shares the parent's session
    children: dict[int, int] = {}  # pid: read end of the pipe of its counts
    count = (
        options.processes
        if options.max_calls is None
        else min(options.processes, options.max_calls)
    )
    for index in range(count):
        if stop_requested():
            break
        budget = options.max_calls
        if budget is not None:  # --max-calls is shared out
            budget = budget // count + (index < budget % count)
        child_options = replace(options, processes=1, max_calls=budget, progress=False)
        read, write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _run_child(
                tables, child_options, loop, after_pass if index == 0 else None, parent, write
            )
        os.close(write)
        children[pid] = read
    health.start_heartbeat()  # when WORKER_HEARTBEAT_FILE is set: the parent's thread
    codes: dict[int, int] = {}
    outcome = Outcome()
    released = False
    passed_on = 0.0  # when a stop was last passed on: again every STOP_WITHIN seconds, for
    # a signal that reaches a child as it is forked is lost (Python resets them there)
    while len(codes) < len(children):
        stop = _stop_signal if stop_requested() else None
        if stop is None and released and loop is not None:
            stop = signal.SIGTERM  # a looping worker lost a process: all stop, exit 1
        if stop is not None and time.monotonic() - passed_on > STOP_WITHIN:
            for pid in set(children) - set(codes):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, stop)
            passed_on = time.monotonic()
        for pid, read in children.items():
            done, status = (0, 0) if pid in codes else os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            codes[pid] = os.waitstatus_to_exitcode(status)
            _add_counts(outcome, read)
            if codes[pid] < 0:  # killed: its reservations are nobody's now
                log.error("worker process %d died of %s", pid, signal.Signals(-codes[pid]).name)
                _release_child(tables, options, pid)
                released = True
        time.sleep(0.02)
    for connection in connections:
        with contextlib.suppress(Exception):  # as the caller left it, when the server answers
            reconnect(connection)
    if stop_requested():
        return stopped_exit_code(), outcome
    return (1 if released or any(codes.values()) else 0), outcome


def _add_counts(outcome: Outcome, read: int) -> None:
    """Add a finished child's counts (nothing when it was killed) to `outcome`."""
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read()
    for name, (made, failed) in (json.loads(text) if text else {}).items():
        before = outcome.counts.get(name, (0, 0))
        outcome.counts[name] = (before[0] + made, before[1] + failed)
        outcome.made += made
        outcome.failed += failed


def _release_child(tables: list[type[dj.Table]], options: Options, pid: int) -> None:
    """Re-queue the reservations of a child that was killed, retrying transient errors."""
    for attempt in range(1, options.retries + 2):
        try:
            reconnect_all(tables, options)
            released = sum(release_mine(table(), pid) for table in tables)
            log.warning("re-queued %d key(s) reserved by worker process %d", released, pid)
            return
        except Exception as error:  # noqa: BLE001 -- logged: the exit is 1 anyway
            if not is_transient(error) or attempt > options.retries:
                log.error("could not re-queue the keys of worker process %d: %s", pid, error)
                return
            time.sleep(Populator(options).backoff(attempt))


def connect(options: Options, tables: Sequence[type[dj.Table]] = ()) -> list[type[dj.Table]]:
    """pipeline.activate() the schemas; returns those of `tables` not declared. Transient errors (a
    server restarting, a session lost as it opened) are tried again as for a key;
    StopRequested when a stop came meanwhile."""
    attempt = 0
    while True:
        try:
            pipeline.activate()
            return [table for table in tables if not table().is_declared]
        except Exception as error:
            attempt += 1
            if is_transient(error) and stop_requested():
                raise StopRequested("stopped while connecting") from error
            if not is_transient(error) or attempt > options.retries:
                raise
            populator = Populator(options)
            delay = populator.backoff(attempt)
            log.warning("%s: %s; connecting again in %.1f s", type(error).__name__, error, delay)
            populator.pause(delay)
            with contextlib.suppress(Exception):  # else the next try meets the error
                reconnect(dj.conn())  # the session pipeline.activate() uses, when it was opened
            # DataJoint's pipeline.activate() skips a schema it began with
            for module in pipeline.modules:
                module.schema.database = None


def main(pipeline_: Pipeline, argv: list[str] | None = None) -> int:
    """Run the worker on `pipeline_` (argv: the command line's arguments)."""
    use(pipeline_)
    # First of all: a stop at any moment exits 128 + N. A database that refuses us, or
    # stays unreachable, ends the worker with one line (and exit 2), not a traceback.
    with stop_handlers(), health.database_errors_reported():
        code = work(argv)
    if code in (0, 1):
        log.info("worker finished: %s", "errors were met" if code else "no errors")
    return code


def work(argv: list[str] | None) -> int:
    """The worker's program, with the stop handlers in place."""
    datajoint_logs_to_stderr()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tables = select_tables(args.table, args.schema)
        settings = alerts.configured_settings() if args.alerts else None
    except ValueError as error:  # AlertError is a ValueError too
        parser.error(str(error))
    options = options_from(args)
    try:
        missing = connect(options, tables)
    except StopRequested:
        return stopped_exit_code()
    except Exception as error:
        if not is_transient(error):
            raise
        log.error("database unavailable, giving up: %s: %s", type(error).__name__, error)
        return exit_code(1)
    operations.announce(writes=True)  # the schema set it works on, production said so
    if missing:  # production mode (DJ_CREATE_TABLES=false) declares nothing
        names = ", ".join(f"{schema_of(t)}.{t.__name__}" for t in missing)
        log.error("not declared: %s; run `%s declare` first", names, pipeline.command)
        return 2
    if options.processes == 1:  # else once the children are forked: no thread is forked
        health.start_heartbeat()  # for container health checks (WORKER_HEARTBEAT_FILE)
    log.info("worker started: %s", ", ".join(f"{schema_of(t)}.{t.__name__}" for t in tables))
    after_pass = None
    if settings is not None:

        def after_pass() -> None:
            try:
                alerts.check(settings)
            except alerts.AlertError as error:
                log.warning("%s", error)

    code, _ = populate(tables, options, loop=args.loop, after_pass=after_pass)
    return exit_code(code)
