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

It reads with the credentials DataJoint is configured with and shows no secret. Failed jobs
can be re-queued from the page only when the server is started with ``--allow-retry``.
"""

from __future__ import annotations

import html
import json
import logging
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from graphlib import TopologicalSorter
from importlib.resources import files
from typing import Any

import datajoint as dj
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import MODULES, PIPELINE, SCHEMA_ROLES, auto_tables, operations, schema_prefix, short_name
from .jobs import retry as retry_jobs

log = logging.getLogger(__name__)

#: One DataJoint connection serves every request, so queries take turns.
DATABASE_LOCK = threading.Lock()
STATIC = files(__package__) / "dashboard_files"


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

    for table in auto_tables():
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


class PipelineCollector(Collector):
    """Gauges read from the database at every scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        prefix = schema_prefix()
        up = GaugeMetricFamily("datajoint_up", "1 when the database answered", labels=["prefix"])
        try:
            with DATABASE_LOCK:
                rows = status_data(errors_shown=0)
                workers = workers_data()
                now = database_now()
        except Exception as error:  # noqa: BLE001  (still answer: alert on datajoint_up == 0)
            log.warning("metrics: the database did not answer: %s", error)
            up.add_metric([prefix], 0)
            yield up
            return
        up.add_metric([prefix], 1)
        yield up
        for field, help_text in (
            ("done", "keys made"),
            ("remaining", "keys still to make"),
            ("total", "keys to make in all"),
            ("reserved", "jobs reserved by a worker now"),
            ("errors", "jobs in error"),
        ):
            gauge = GaugeMetricFamily(
                f"datajoint_table_{field}", f"Per table: {help_text}", labels=["prefix", "table"]
            )
            for row in rows:
                if field in row:  # auto-populated tables only
                    gauge.add_metric([prefix, row["table"]], row[field])
            yield gauge
        heartbeat = GaugeMetricFamily(
            "datajoint_worker_last_seen_seconds",
            "Seconds since a worker last reserved or finished a job (its heartbeat)",
            labels=["prefix", "host", "pid"],
        )
        held = GaugeMetricFamily(
            "datajoint_worker_reserved", "Jobs a worker holds now", labels=["prefix", "host", "pid"]
        )
        for worker in workers:
            labels = [prefix, worker["host"], str(worker["pid"])]
            if worker["last_seen"] is not None:
                heartbeat.add_metric(labels, max(0.0, (now - worker["last_seen"]).total_seconds()))
            held.add_metric(labels, worker["reserved"])
        yield heartbeat
        yield held


# ---- The schema and table diagrams: SVG drawn here, from PIPELINE and the tables' foreign keys.

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
    """The schemas and the schemas they depend on (PIPELINE), colored by role."""
    return layered_svg(
        PIPELINE,
        {name: name for name in PIPELINE},
        {name: ROLE_COLORS.get(role, "#fff") for name, role in SCHEMA_ROLES.items()},
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
        for module in MODULES
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


# ---- The web application.


def info(allow_retry: bool) -> dict:
    """What the page says about where it reads from: never the password."""
    config = dj.config.database
    return {
        "prefix": schema_prefix(),
        "database": f"{config.user}@{config.host}:{config.port} ({config.backend})",
        "allow_retry": allow_retry,
    }


def create_app(allow_retry: bool = False, refresh_seconds: float = 5.0) -> Starlette:
    """The dashboard as an ASGI application."""

    def locked(function: Any, *args: Any) -> Any:
        with DATABASE_LOCK:
            return function(*args)

    def page(request: Request) -> HTMLResponse:
        text = (STATIC / "index.html").read_text(encoding="utf-8")
        about = info(allow_retry) | {"refresh_seconds": refresh_seconds}
        text = text.replace("<!--DIAGRAM-->", schema_svg()).replace(
            "__INFO__", html.escape(json.dumps(about), quote=True)
        )
        return HTMLResponse(text)

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        types = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
        if name not in types:
            return Response("not found", status_code=404)
        return Response((STATIC / name).read_text(encoding="utf-8"), media_type=types[name])

    def api_status(request: Request) -> Response:
        return Response(to_json(locked(status_data)), media_type="application/json")

    def api_workers(request: Request) -> Response:
        return Response(to_json(locked(workers_data)), media_type="application/json")

    def diagram(request: Request) -> Response:
        schema = request.path_params["schema"]
        if schema not in PIPELINE:
            return Response(f"no schema {schema!r}", status_code=404)
        return Response(locked(tables_svg, schema), media_type="image/svg+xml")

    registry = CollectorRegistry()
    registry.register(PipelineCollector())

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def retry(request: Request) -> JSONResponse:
        if not allow_retry:
            return JSONResponse(
                {"error": "retry is disabled: start `serve` with --allow-retry"}, status_code=403
            )
        if request.headers.get("content-type") != "application/json":  # no cross-site forms
            return JSONResponse({"error": "send application/json"}, status_code=415)
        table = request.path_params["table"]
        try:
            count = locked(retry_errors, table)
        except ValueError:
            return JSONResponse({"error": f"no auto-populated table {table!r}"}, status_code=404)
        return JSONResponse({"table": table, "requeued": count})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", static),
            Route("/api/status", api_status),
            Route("/api/workers", api_workers),
            Route("/api/retry/{table}", retry, methods=["POST"]),
            Route("/diagram/{schema}.svg", diagram),
            Route("/metrics", metrics),
            Route("/healthz", lambda request: Response("ok\n", media_type="text/plain")),
        ]
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (see .getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def make_server(app: Starlette, sock: socket.socket) -> uvicorn.Server:
    """A uvicorn server for the app on an already bound socket."""
    host, port = sock.getsockname()[:2]
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))


def serve(host: str, port: int, allow_retry: bool, refresh_seconds: float) -> None:
    """Run the dashboard until stopped (Ctrl-C)."""
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"Dashboard on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops it)", flush=True)
    try:
        make_server(create_app(allow_retry, refresh_seconds), sock).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        print("Dashboard stopped.")
