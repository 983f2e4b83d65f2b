"""The pipeline's web dashboard and Prometheus metrics: `python -m <package> serve`.

One page shows the schema diagram (click a schema for its tables), each table's
progress as bars that refresh live, the latest errors and the workers holding
reservations. It serves every file itself (no CDN), so it works on a cluster's
internal network. Endpoints:

    /              the page
    /api/status    the JSON of `python -m <package> status --json`
    /api/workers   workers seen in reservations: host, pid, since
    /metrics       Prometheus text format: per-table gauges and a worker heartbeat
    /diagram/<schema>.svg   the tables of one schema
    /healthz       "ok" without touching the database: for liveness probes
    /login         where a browser gives the token, when one is set

Cheap to scrape: one background thread reads the database once per refresh period and
every request answers from that reading, so a page view or a scrape sends no query, and
the dashboard keeps answering (``datajoint_up 0``) while the database is away.

Safe to expose: a request must name the dashboard by a loopback name, an IP address or
a name given with ``--allow-host`` (a DNS-rebinding page cannot read it). A token (in
``.secrets/dashboard.token``, ``/run/secrets/datajoint/dashboard.token`` or
``$DASHBOARD_TOKEN``), or a signing-in proxy in front (``--proxy-user-header``), is then
asked for by every page but /healthz, and it is required to listen beyond loopback and
for actions: re-queuing failed jobs (``--allow-retry``), only from the dashboard's own
page or with the token. Idle and half-sent connections are closed after a few seconds.
It reads with the credentials DataJoint is configured with and shows no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from graphlib import TopologicalSorter
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import datajoint as dj
import h11
import uvicorn
from datajoint.settings import find_config_file
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from . import health, operations
from .jobs import retry as retry_jobs
from .project import pipeline, short_name

log = logging.getLogger(__name__)

#: One DataJoint connection serves the refresher and the actions, so queries take turns.
DATABASE_LOCK = threading.Lock()
STATIC = files(__package__) / "dashboard_files"
#: Seconds a client has to send a whole request; then its connection is closed.
REQUEST_SECONDS = 5.0
#: Seconds a request waits for the very first reading after the start.
FIRST_READING_SECONDS = 30.0
TOKEN_VARIABLE = "DASHBOARD_TOKEN"
TOKEN_FILE = "dashboard.token"
CONTAINER_SECRETS = Path("/run/secrets/datajoint")
SESSION_COOKIE = "dashboard_session"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def status_data(errors_shown: int = 3) -> list[dict]:
    """Every table's rows, and the auto-populated ones' progress and latest errors: what
    `status --json` prints.

    The one place the dashboard, the metrics and the alerts get their numbers from.
    """
    return operations.status_report(errors_shown)


def to_json(data: Any) -> str:
    """JSON as `status --json` writes it (dates and decimals as text)."""
    return json.dumps(data, indent=2, default=str)


def database_now() -> Any:
    """The database server's clock, in the time zone DataJoint writes job times in."""
    return dj.conn().query("SELECT LOCALTIMESTAMP").fetchone()[0]


def workers_data() -> list[dict]:
    """Workers (host, pid) seen in the jobs tables: since their oldest reservation, last seen."""
    workers: dict[tuple[str, int], dict] = {}

    def worker(row: dict) -> dict:
        return workers.setdefault(
            (row["host"], row["pid"]),
            {
                "host": row["host"],
                "pid": row["pid"],
                "since": None,
                "last_seen": None,
                "reserved": 0,
                "tables": [],
            },
        )

    for table in pipeline.auto_tables():
        if table.database is None:  # its schema is not declared under this prefix
            continue
        jobs = operations.existing_jobs(table)  # Table.jobs would declare it: stay read-only
        if jobs is None:
            continue
        seen = dj.U("host", "pid").aggr(
            jobs & "host != ''",
            reserved="MAX(reserved_time)",
            completed="MAX(completed_time)",
        )
        for row in seen.to_dicts():
            entry = worker(row)
            moments = [m for m in (row["reserved"], row["completed"], entry["last_seen"]) if m]
            entry["last_seen"] = max(moments, default=None)
        label = operations.label(table)
        for row in jobs.reserved.proj("host", "pid", "reserved_time").to_dicts():
            entry = worker(row)
            entry["reserved"] += 1
            if label not in entry["tables"]:
                entry["tables"].append(label)
            if entry["since"] is None or row["reserved_time"] < entry["since"]:
                entry["since"] = row["reserved_time"]
    return sorted(workers.values(), key=lambda w: (w["since"] is None, str(w["since"])))


def retry_errors(table_name: str) -> int:
    """Put the failed jobs of one table ('schema.Class') back in the queue; returns how many.

    Raises ValueError for a name that is not an auto-populated table.
    """
    return retry_jobs([table_name], {}, None)


# ---- One reading of the database per refresh period, shared by every request.


@dataclass(frozen=True)
class Snapshot:
    """What the database said at one refresh (or why it said nothing)."""

    up: bool
    error: str = ""
    started: float = 0.0  # time.monotonic() when the reading began: the newest wins
    finished: float = 0.0  # time.monotonic() when it ended
    timestamp: float = 0.0  # time.time() of the last successful reading (0: none yet)
    duration: float = 0.0  # seconds the reading took
    status: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    database_now: datetime | None = None
    status_json: bytes = b""
    workers_json: bytes = b""


def reconnect() -> None:
    """Connect, or connect DataJoint's connection again if the server dropped it (a restart,
    a network cut): activated schemas keep using the same connection object.

    A query tells, not ``Connection.is_connected``: DataJoint 2.3's adapters answer its
    ping with False instead of raising, so it says True for a dead connection."""
    connection = dj.conn()
    try:
        connection.query("SELECT 1").fetchall()
    except Exception:  # noqa: BLE001  (each driver says "gone" in its own way)
        connection.connect()


class Refresher:
    """Reads the pipeline's status every `period` seconds in a thread of its own."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.snapshot = Snapshot(up=False, error="not read yet")
        self._swap = threading.Lock()
        self._first = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> Snapshot:
        """Read the database now; the new snapshot replaces an older one."""
        with DATABASE_LOCK:
            started = time.monotonic()
            try:
                reconnect()
                status = status_data()
                workers = workers_data()
                now = database_now()
            except Exception as error:  # noqa: BLE001  (still answer: datajoint_up 0)
                problem = health.database_failure(error) or f"{type(error).__name__}: {error}"
                old = self.snapshot
                snapshot = Snapshot(
                    up=False,
                    error=problem,
                    started=started,
                    finished=time.monotonic(),
                    timestamp=old.timestamp,
                    duration=time.monotonic() - started,
                )
                if old.up or old.error != problem:
                    log.warning("dashboard: the database did not answer: %s", problem)
            else:
                finished = time.monotonic()
                snapshot = Snapshot(
                    up=True,
                    started=started,
                    finished=finished,
                    timestamp=time.time(),
                    duration=finished - started,
                    status=status,
                    workers=workers,
                    database_now=now,
                    status_json=to_json(status).encode(),
                    workers_json=to_json(workers).encode(),
                )
                if not self.snapshot.up and self._first.is_set():
                    log.warning("dashboard: the database answers again")
        with self._swap:
            if snapshot.started >= self.snapshot.started:
                self.snapshot = snapshot
        self._first.set()
        return snapshot

    def run(self) -> None:
        while not self._stop.is_set():
            self.read()
            self._wake.wait(self.period)
            self._wake.clear()

    def wake(self) -> None:
        """Read again now, not at the end of the period (after an action)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="dashboard-refresh", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading; wait up to `timeout` seconds for a reading under way to end, so
        that nothing uses the database connection once the server has stopped."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float) -> bool:
        """Wait until the first reading has ended; False if it has not within `timeout`."""
        return self._first.wait(timeout)

    async def first_reading(self) -> Snapshot:
        """The current snapshot, once the first reading after the start has ended."""
        if not self._first.is_set():
            await run_in_threadpool(self.wait, FIRST_READING_SECONDS)
        return self.snapshot


class PipelineCollector(Collector):
    """The refresher's latest reading as Prometheus gauges: scrapes send no query."""

    def __init__(self, refresher: Refresher) -> None:
        self.refresher = refresher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        prefix = pipeline.schema_prefix()
        snapshot = self.refresher.snapshot
        up = GaugeMetricFamily(
            "datajoint_up", "1 when the database answered the last reading", labels=["prefix"]
        )
        up.add_metric([prefix], 1 if snapshot.up else 0)
        yield up
        read = GaugeMetricFamily(
            "datajoint_last_reading_timestamp_seconds",
            "Unix time of the last reading the database answered",
            labels=["prefix"],
        )
        read.add_metric([prefix], snapshot.timestamp)
        yield read
        took = GaugeMetricFamily(
            "datajoint_reading_duration_seconds",
            "Seconds the last reading of the database took",
            labels=["prefix"],
        )
        took.add_metric([prefix], snapshot.duration)
        yield took
        if not snapshot.up:
            return
        for field_name, name, help_text in (
            ("done", "done", "keys made"),
            ("remaining", "remaining", "keys still to make"),
            ("total", "keys", "keys to make in all"),
            ("reserved", "reserved", "jobs reserved by a worker now"),
            ("errors", "errors", "jobs in error"),
        ):
            gauge = GaugeMetricFamily(
                f"datajoint_table_{name}", f"Per table: {help_text}", labels=["prefix", "table"]
            )
            for row in snapshot.status:
                if field_name in row:  # auto-populated tables only
                    gauge.add_metric([prefix, row["table"]], row[field_name])
            yield gauge
        heartbeat = GaugeMetricFamily(
            "datajoint_worker_last_seen_seconds",
            "Seconds since a worker last reserved or finished a job (its heartbeat)",
            labels=["prefix", "host", "pid"],
        )
        held = GaugeMetricFamily(
            "datajoint_worker_reserved", "Jobs a worker holds now", labels=["prefix", "host", "pid"]
        )
        since_reading = time.monotonic() - snapshot.finished
        for worker in snapshot.workers:
            labels = [prefix, worker["host"], str(worker["pid"])]
            if worker["last_seen"] is not None and snapshot.database_now is not None:
                age = (snapshot.database_now - worker["last_seen"]).total_seconds()
                heartbeat.add_metric(labels, max(0.0, age) + since_reading)
            held.add_metric(labels, worker["reserved"])
        yield heartbeat
        yield held


# ---- The schema and table diagrams: SVG drawn here, from pipeline.graph and the tables' foreign keys.

NODE_HEIGHT = 34
LAYER_GAP = 70
NODE_GAP = 24
ROLE_COLORS = {"acquisition": "#d9f2d9", "processing": "#dbe8fb", "analysis": "#fbe3d9"}
TIER_COLORS = {
    "Manual": "#d9f2d9",
    "Lookup": "#e8e8e8",
    "Imported": "#dbe8fb",
    "Computed": "#fbdada",
    "Part": "#ffffff",
}


def layered_svg(
    graph: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    colors: Mapping[str, str],
    css_class: str,
    links: bool = False,
) -> str:
    """An SVG drawing of a graph {node: upstream nodes}, upstream on top, one layer per depth."""
    order = list(TopologicalSorter(graph).static_order())
    depth: dict[str, int] = {}
    for node in order:
        depth[node] = 1 + max((depth[p] for p in graph.get(node, ())), default=-1)
    layers: dict[int, list[str]] = {}
    for node in order:
        layers.setdefault(depth[node], []).append(node)
    width = {node: 24 + 8 * len(labels[node]) for node in order}
    row_width = {
        d: sum(width[n] for n in row) + NODE_GAP * (len(row) - 1) for d, row in layers.items()
    }
    total_width = max(row_width.values(), default=0) + 2 * NODE_GAP
    place: dict[str, tuple[float, float]] = {}
    for d, row in layers.items():
        x = (total_width - row_width[d]) / 2
        for node in row:
            place[node] = (x, NODE_GAP + d * LAYER_GAP)
            x += width[node] + NODE_GAP
    height = NODE_GAP * 2 + NODE_HEIGHT + LAYER_GAP * max(layers, default=0)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" role="img"'
            f' width="{total_width:.0f}" height="{height:.0f}"'
            f' viewBox="0 0 {total_width:.0f} {height:.0f}">'
        ),
        (
            f'<defs><marker id="arrow-{css_class}" viewBox="0 0 10 10" refX="10" refY="5"'
            ' markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#666"/>'
            "</marker></defs>"
        ),
    ]
    for node in order:
        x, y = place[node]
        for parent in graph.get(node, ()):
            px, py = place[parent]
            x1, y1 = px + width[parent] / 2, py + NODE_HEIGHT
            x2, y2 = x + width[node] / 2, y
            middle = (y1 + y2) / 2
            parts.append(
                f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{x1:.0f},{middle:.0f} {x2:.0f},{middle:.0f}'
                f' {x2:.0f},{y2:.0f}" fill="none" stroke="#666" marker-end="url(#arrow-{css_class})"/>'
            )
    for node in order:
        x, y = place[node]
        name = html.escape(node, quote=True)
        shape = (
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{width[node]}" height="{NODE_HEIGHT}" rx="8"'
            f' fill="{colors.get(node, "#fff")}" stroke="#444"/>'
            f'<text x="{x + width[node] / 2:.0f}" y="{y + NODE_HEIGHT / 2 + 5:.0f}"'
            f' text-anchor="middle">{html.escape(labels[node])}</text>'
        )
        if links:
            shape = f'<a href="#tables-{name}" data-schema="{name}" class="node">{shape}</a>'
        else:
            shape = f'<g class="node" data-table="{name}">{shape}</g>'
        parts.append(shape)
    parts.append("</svg>")
    return "".join(parts)


def schema_svg() -> str:
    """The schemas and the schemas they depend on (pipeline.graph), colored by role."""
    return layered_svg(
        pipeline.graph,
        {name: name for name in pipeline.graph},
        {name: ROLE_COLORS.get(role, "#fff") for name, role in pipeline.roles.items()},
        "pipeline-diagram",
        links=True,
    )


def table_classes(module: Any) -> list[type[dj.Table]]:
    """The table classes a schema module declares, with their Part tables."""
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, dj.Table)
            and value.__module__ == module.__name__
        ):
            found.append(value)
            found += [
                part
                for part in vars(value).values()
                if isinstance(part, type) and issubclass(part, dj.Part)
            ]
    return found


def table_label(cls: type[dj.Table]) -> str:
    """'Class' or 'Master.Part'."""
    return f"{cls.master.__name__}.{cls.__name__}" if issubclass(cls, dj.Part) else cls.__name__


def tables_svg(schema: str) -> str:
    """One schema's tables and their foreign keys (tables of other schemas in grey)."""
    every = {
        cls.full_table_name: (short_name(module), cls)
        for module in pipeline.modules
        for cls in table_classes(module)
    }
    graph: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    colors: dict[str, str] = {}
    for full_name, (module_name, cls) in every.items():
        if module_name != schema:
            continue
        tier = next((t for t in TIER_COLORS if issubclass(cls, getattr(dj, t))), "Part")
        labels[full_name], colors[full_name] = table_label(cls), TIER_COLORS[tier]
        graph[full_name] = []
        for parent in cls().parents(primary=None):
            if parent.isdigit():  # the node of a renamed foreign key: its parent follows
                continue
            graph[full_name].append(parent)
            if parent not in labels:
                other, parent_cls = every.get(parent, (None, None))
                labels[parent] = f"{other}.{table_label(parent_cls)}" if parent_cls else parent
                colors[parent] = "#f4f4f4"
                graph.setdefault(parent, [])
    return layered_svg(graph, labels, colors, "table-diagram")


# ---- Who may read and act: the Host header, the token, a signing-in proxy.


def read_token() -> str | None:
    """The dashboard token: $DASHBOARD_TOKEN, else .secrets/dashboard.token next to
    datajoint.json, else the container's /run/secrets/datajoint/dashboard.token."""
    value = os.environ.get(TOKEN_VARIABLE, "")
    if not value.strip():
        config_file = find_config_file()
        folders = [config_file.parent / ".secrets"] if config_file else []
        for folder in [*folders, CONTAINER_SECRETS]:
            if (folder / TOKEN_FILE).is_file():
                value = (folder / TOKEN_FILE).read_text(encoding="utf-8")
                break
    return value.strip() or None


def is_loopback(host: str) -> bool:
    """Whether an address or name to listen on reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without the port: 'example.org', '127.0.0.1', '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    return (name if name and port.isdigit() else header).rstrip(".")


@dataclass(frozen=True)
class Access:
    """The rules for who may read the dashboard and act on it."""

    token: str | None = None
    #: Names the dashboard answers to besides loopback names and IP addresses.
    allowed_hosts: tuple[str, ...] = ()
    #: A header that a signing-in proxy on this machine sets to the user's name.
    proxy_user_header: str | None = None
    #: Let /metrics answer without signing in (for scrapers that cannot send a token).
    open_metrics: bool = False

    @property
    def login_required(self) -> bool:
        return bool(self.token or self.proxy_user_header)

    @property
    def session(self) -> str:
        """The cookie value of a signed-in browser: derived from the token, not the token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"dashboard session", hashlib.sha256).hexdigest()

    def host_allowed(self, header: str) -> bool:
        """Only names that cannot be pointed at the dashboard by someone else's DNS: a
        DNS-rebinding page names its own domain, which is refused."""
        name = host_name(header)
        if not name:
            return False
        if name in LOOPBACK_NAMES or name in (host.lower() for host in self.allowed_hosts):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def signed_in(self, request: Request) -> bool:
        """The request carries the token (header or cookie), or comes from the proxy."""
        if self.token:
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                credentials.strip().encode(), self.token.encode()
            ):
                return True
            cookie = request.cookies.get(SESSION_COOKIE, "")
            if cookie and hmac.compare_digest(cookie.encode(), self.session.encode()):
                return True
        if self.proxy_user_header and request.client and is_loopback(request.client.host):
            return bool(request.headers.get(self.proxy_user_header, "").strip())
        return False


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
OPEN_PATHS = ("/healthz", "/login", "/static/")


class Guard:
    """ASGI middleware: refuses foreign Host headers, asks for the token where it is
    required, and adds headers that keep the page out of other sites' frames."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        request = Request(scope)
        response: Response | None = None
        if not self.access.host_allowed(request.headers.get("host", "")):
            response = Response(
                "refused: this dashboard answers only to its own names (see --allow-host)\n",
                status_code=400,
                media_type="text/plain",
            )
        else:
            signed_in = self.access.signed_in(request)
            scope.setdefault("state", {})["signed_in"] = signed_in
            path = scope["path"]
            open_path = path.startswith(OPEN_PATHS) or (
                path == "/metrics" and self.access.open_metrics
            )
            if self.access.login_required and not signed_in and not open_path:
                response = self.login_needed(request)
        if response is None:
            await self.app(scope, receive, send_with_headers)
        else:
            await response(scope, receive, send_with_headers)

    def login_needed(self, request: Request) -> Response:
        if request.method == "GET" and request.url.path == "/" and self.access.token:
            return RedirectResponse("/login", status_code=303)
        return JSONResponse(
            {"error": "sign in: send the dashboard token as 'Authorization: Bearer <token>'"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="dashboard"'},
        )


def same_origin(request: Request) -> bool:
    """A browser's request comes from the dashboard's own page (Origin and Sec-Fetch-Site
    agree); requests from programs carry neither header."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers['host']}":
        return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title>
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body><main><h1>Pipeline dashboard</h1>
<form method="post" action="/login">
<p><label>Dashboard token <input type="password" name="token" autofocus></label>
<button type="submit">Sign in</button></p>
<p class="hint">MESSAGE</p></form></main></body></html>
"""


async def login(request: Request) -> Response:
    """The form that signs a browser in: a cookie only this site's pages send."""
    access: Access = request.app.state.access
    if not access.token:
        return HTMLResponse(LOGIN_PAGE.replace("MESSAGE", "No token is set: nothing to sign."))
    if request.method == "GET":
        message = "The token is in .secrets/dashboard.token or $DASHBOARD_TOKEN."
        return HTMLResponse(LOGIN_PAGE.replace("MESSAGE", message))
    body = await request.body()
    given = parse_qs(body[:4096].decode("utf-8", "replace")).get("token", [""])[0]
    if not hmac.compare_digest(given.strip().encode(), access.token.encode()):
        return HTMLResponse(LOGIN_PAGE.replace("MESSAGE", "Wrong token."), status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, access.session, httponly=True, samesite="strict")
    return response


# ---- The web application.


def info(allow_retry: bool, signed_in: bool = False) -> dict:
    """What the page says about where it reads from: never the password."""
    config = dj.config.database
    return {
        "prefix": pipeline.schema_prefix(),
        "database": f"{config.user}@{config.host}:{config.port} ({config.backend})",
        "allow_retry": allow_retry and signed_in,
    }


def create_app(
    allow_retry: bool = False,
    refresh_seconds: float = 5.0,
    access: Access | None = None,
    refresher: Refresher | None = None,
) -> Starlette:
    """The dashboard as an ASGI application, with the refresher its requests read from
    (``app.state.refresher``): started with the server, stopped with it."""
    access = access or Access()
    refresher = refresher or Refresher(refresh_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        refresher.start()
        yield
        await run_in_threadpool(refresher.stop)

    def locked(function: Any, *args: Any) -> Any:
        with DATABASE_LOCK:
            reconnect()
            return function(*args)

    def reading(snapshot: Snapshot, body: bytes) -> Response:
        if not snapshot.up:
            return JSONResponse({"error": snapshot.error}, status_code=503)
        return Response(body, media_type="application/json")

    async def page(request: Request) -> HTMLResponse:
        text = (STATIC / "index.html").read_text(encoding="utf-8")
        about = info(allow_retry, request.state.signed_in) | {"refresh_seconds": refresh_seconds}
        text = (
            text.replace("<!--DIAGRAM-->", schema_svg())
            .replace("__INFO__", html.escape(json.dumps(about), quote=True))
            .replace("__NAME__", html.escape(pipeline.name))
        )
        return HTMLResponse(text)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        types = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
        if name not in types:
            return Response("not found", status_code=404)
        return Response((STATIC / name).read_text(encoding="utf-8"), media_type=types[name])

    async def api_status(request: Request) -> Response:
        snapshot = await refresher.first_reading()
        return reading(snapshot, snapshot.status_json)

    async def api_workers(request: Request) -> Response:
        snapshot = await refresher.first_reading()
        return reading(snapshot, snapshot.workers_json)

    def diagram(request: Request) -> Response:
        schema = request.path_params["schema"]
        if schema not in pipeline.graph:
            return Response(f"no schema {schema!r}", status_code=404)
        try:
            return Response(locked(tables_svg, schema), media_type="image/svg+xml")
        except Exception as error:  # noqa: BLE001  (an unbound schema, or no database)
            problem = health.database_failure(error) or f"schema {schema!r}: {error}"
            return Response(problem, status_code=503, media_type="text/plain")

    registry = CollectorRegistry()
    registry.register(PipelineCollector(refresher))

    async def metrics(request: Request) -> Response:
        await refresher.first_reading()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    def retry(request: Request) -> JSONResponse:
        if not allow_retry:
            return JSONResponse(
                {"error": "retry is disabled: start `serve` with --allow-retry"}, status_code=403
            )
        if not same_origin(request):  # another site's page, in a signed-in browser
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        if not request.state.signed_in:
            return JSONResponse({"error": "sign in to re-queue jobs"}, status_code=401)
        if request.headers.get("content-type") != "application/json":  # no cross-site forms
            return JSONResponse({"error": "send application/json"}, status_code=415)
        table = request.path_params["table"]
        try:
            count = locked(retry_errors, table)
        except ValueError:
            return JSONResponse({"error": f"no auto-populated table {table!r}"}, status_code=404)
        refresher.wake()  # the page shows the change at the next reading, in a moment
        return JSONResponse({"table": table, "requeued": count})

    app = Starlette(
        lifespan=lifespan,
        middleware=[Middleware(Guard, access=access)],
        routes=[
            Route("/", page),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/static/{name}", static),
            Route("/api/status", api_status),
            Route("/api/workers", api_workers),
            Route("/api/retry/{table}", retry, methods=["POST"]),
            Route("/diagram/{schema}.svg", diagram),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
        ],
    )
    app.state.access = access
    app.state.refresher = refresher
    return app


class TimelyH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 with a deadline: a client has REQUEST_SECONDS to send a whole
    request, on a new connection or after a response; an idle or half-sent connection is
    then closed (uvicorn alone waits for ever for a first request or a request's end)."""

    deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle: RequestResponseCycle | None = self.cycle  # None between requests
        receiving = cycle is None or cycle.response_complete
        if not receiving or self.conn.their_state is h11.DONE:
            self.disarm()  # the whole request is in: the answer may take its time

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)

    def arm(self) -> None:
        self.disarm()
        self.deadline = self.loop.call_later(REQUEST_SECONDS, self.too_slow)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (see .getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def make_server(app: ASGIApp, sock: socket.socket) -> uvicorn.Server:
    """A uvicorn server for the app on an already bound socket."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=TimelyH11Protocol,
        timeout_keep_alive=int(REQUEST_SECONDS),
        proxy_headers=False,  # the peer's own address: a proxy's header is trusted by Access
        server_header=False,
        log_level="warning",
    )
    return uvicorn.Server(config)


def exposure_problem(host: str, allow_retry: bool, access: Access) -> str | None:
    """Why the dashboard must not start with these settings, or None."""
    if access.token is not None and len(access.token) < 16:
        return (
            "the dashboard token is shorter than 16 characters: make one with"
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if access.login_required:
        return None
    where = (
        f"write a token to .secrets/{TOKEN_FILE} (or set ${TOKEN_VARIABLE}),"
        " or put a signing-in proxy in front (--proxy-user-header)"
    )
    if not is_loopback(host):
        return f"--host {host} reaches beyond this machine: {where}"
    if allow_retry:
        return f"--allow-retry lets the page change jobs: {where}"
    return None


def serve(
    host: str,
    port: int,
    allow_retry: bool,
    refresh_seconds: float,
    access: Access | None = None,
) -> None:
    """Run the dashboard until stopped (Ctrl-C); the database may come and go meanwhile."""
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"Dashboard on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops it)", flush=True)
    try:
        make_server(create_app(allow_retry, refresh_seconds, access), sock).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        print("Dashboard stopped.")
