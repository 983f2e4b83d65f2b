"""The dashboard served for real on a free port, read over HTTP and in headless Chromium."""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import datajoint as dj
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ONE_COMBINATION

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def operations(project):
    return project.tk.operations


@pytest.fixture
def cli(project):
    """The project's command line: cli(argv) runs `python -m <package> argv` in-process."""
    return lambda argv: project.tk.cli.main(project.pipeline, argv)


@pytest.fixture
def serve(pipeline, dashboard):
    """Start the dashboard in a thread on a free loopback port; returns its base URL once
    its first reading of the database is done.

    It reads at the start and after an action only: the tests use the same DataJoint
    connection meanwhile, and a connection serves one thread at a time.
    """
    servers = []

    def start(allow_retry=False, access=None, refresher=None):
        refresher = refresher or dashboard.Refresher(period=3600)
        sock = dashboard.bind("127.0.0.1", 0)
        app = dashboard.create_app(allow_retry, 2.0, access, refresher)
        server = dashboard.make_server(app, sock)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "the dashboard did not start"
        assert refresher.wait(60), "no first reading"
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def get(url, data=None, content_type="application/json", headers=None):
    """(status, body text, headers) of a GET, or of a POST when data is given."""
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type, **(headers or {})}
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=60) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


def signed_in():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_api_status_is_what_status_json_prints(serve, failing_table, capsys, cli):
    table, fail = failing_table
    fail()
    status, body, _ = get(serve() + "/api/status")
    assert status == 200
    assert cli(["status", "--json"]) == 1  # a job is in error
    assert json.loads(body) == json.loads(capsys.readouterr().out)
    row = next(row for row in json.loads(body) if row["table"].endswith("." + table.__name__))
    assert row["errors"] == 1
    assert "simulated failure" in row["latest_errors"][0]["message"]


def test_metrics_parse_as_prometheus_text(serve, failing_table, pipeline):
    table, fail = failing_table
    fail()
    status, body, _ = get(serve() + "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert families["datajoint_up"].samples[0].value == 1
    done = {s.labels["table"]: s.value for s in families["datajoint_table_done"].samples}
    assert len(done) == len(pipeline.auto_tables())
    keys = {s.labels["table"]: s.value for s in families["datajoint_table_keys"].samples}
    assert keys == {
        table: done[table] + remaining
        for table, remaining in (
            (s.labels["table"], s.value) for s in families["datajoint_table_remaining"].samples
        )
    }
    errors = {s.labels["table"]: s.value for s in families["datajoint_table_errors"].samples}
    assert errors[f"{table.__module__.rpartition('.')[2]}.{table.__name__}"] == 1
    # Gauges only, and none named like a counter (promtool's rule; the template tests run it).
    assert {family.type for family in families.values()} == {"gauge"}
    assert not [name for name in families if name.endswith("_total")]
    # This process made the failed job: it is the worker whose heartbeat is exported.
    heartbeat = families["datajoint_worker_last_seen_seconds"].samples
    assert str(os.getpid()) in {sample.labels["pid"] for sample in heartbeat}
    assert all(sample.value >= 0 for sample in heartbeat)
    assert time.time() - families["datajoint_last_reading_timestamp_seconds"].samples[0].value < 60


@pytest.mark.slow
# What the page draws comes from the reading, whatever the server: one backend.
@pytest.mark.only(database="embedded")
def test_page_draws_the_diagram_and_progress_bars_in_chromium(
    serve, failing_table, tmp_path, dashboard, project
):
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        pytest.skip("no Chromium or Chrome: apt-get install chromium")
    table, fail = failing_table
    fail()
    schema = table.__module__.rpartition(".")[2]
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"{serve()}/?schema={schema}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dom = result.stdout
    assert 'class="pipeline-diagram"' in dom
    assert all(f'data-schema="{name}"' in dom for name in project.pipeline.graph)
    assert 'class="table-diagram"' in dom  # the tables of one schema, fetched on demand
    assert f">{table.__name__}</text>" in dom
    assert dom.count('class="bar table-progress"') == len(project.pipeline.auto_tables())
    assert "simulated failure" in dom  # the recent errors table
    assert 'class="worker"' in dom
    assert "Updated" in dom  # the script refreshed the page from /api/status


def test_no_password_in_any_response(
    serve, failing_table, monkeypatch, dashboard, project, database
):
    _, fail = failing_table
    fail()
    password = "S3cr3t-'\"$$-sentinel"
    monkeypatch.setitem(dj.config, "database.password", password)
    base = serve(allow_retry=True, access=dashboard.Access(token=TOKEN))
    paths = ["/", "/api/status", "/api/workers", "/metrics", "/static/dashboard.js", "/healthz"]
    paths += [f"/diagram/{schema}.svg" for schema in list(project.pipeline.graph)[-3:]]
    for path in paths:
        status, body, _ = get(base + path, headers=signed_in())
        assert status == 200, path
        assert password not in body, path


def test_scrapes_and_page_views_send_no_query(serve, pipeline, monkeypatch, dashboard):
    """Every request answers from the one reading the refresher made."""
    refresher = dashboard.Refresher(period=3600)  # one reading, at the start
    base = serve(refresher=refresher)
    sent = []
    query = dj.conn().query

    def counted(*args, **kwargs):
        sent.append(args)
        return query(*args, **kwargs)

    monkeypatch.setattr(dj.conn(), "query", counted)
    for _ in range(10):
        for path in ("/metrics", "/api/status", "/api/workers", "/"):
            assert get(base + path)[0] == 200, path
    assert sent == []
    refresher.read()  # what the refresher does once per period
    assert len(sent) > 0


@ONE_COMBINATION
def test_healthz_and_metrics_never_wait_on_the_database(serve, pipeline, dashboard):
    base = serve()
    with dashboard.DATABASE_LOCK:  # a reading (or an action) that takes its time
        for path in ("/healthz", "/metrics", "/api/status"):
            started = time.monotonic()
            assert get(base + path)[0] == 200, path
            assert time.monotonic() - started < 2, path


@ONE_COMBINATION
@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:{port}", True),
        ("127.0.0.1:{port}", True),
        ("[::1]:{port}", True),
        ("10.1.2.3:{port}", True),  # an address: no one else's DNS can name it
        ("dash.lab.example", True),  # given with --allow-host
        ("rebind.attacker.example:{port}", False),  # a DNS-rebinding page's own name
        ("localhost.attacker.example", False),
        ("", False),
    ],
)
def test_only_the_dashboards_own_names_are_answered(serve, host, allowed, dashboard):
    base = serve(access=dashboard.Access(allowed_hosts=("dash.lab.example",)))
    port = base.rpartition(":")[2]
    status, body, _ = get(base + "/api/status", headers={"Host": host.format(port=port)})
    assert status == (200 if allowed else 400), body
    if not allowed:
        assert "--allow-host" in body


@ONE_COMBINATION
def test_a_token_is_asked_for_everywhere_but_healthz(serve, dashboard):
    base = serve(access=dashboard.Access(token=TOKEN))
    for path in ("/api/status", "/api/workers", "/metrics", "/diagram/x.svg"):
        status, body, headers = get(base + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert get(base + path, headers=signed_in())[0] in (200, 404), path
    assert get(base + "/healthz")[:2] == (200, "ok\n")
    status, _, headers = get(base + "/")
    assert (status, headers["Location"]) == (303, "/login")
    assert get(base + "/login", data=b"token=wrong", content_type=FORM)[0] == 401
    status, _, headers = get(base + "/login", data=f"token={TOKEN}".encode(), content_type=FORM)
    assert status == 303
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert TOKEN not in cookie
    status, body, headers = get(base + "/", headers={"Cookie": cookie.split(";")[0]})
    assert status == 200
    assert 'class="pipeline-diagram"' in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    metrics_open = serve(access=dashboard.Access(token=TOKEN, open_metrics=True))
    assert get(metrics_open + "/metrics")[0] == 200
    assert get(metrics_open + "/api/status")[0] == 401


FORM = "application/x-www-form-urlencoded"


@ONE_COMBINATION
def test_a_proxy_on_this_machine_signs_users_in(serve, dashboard):
    base = serve(access=dashboard.Access(proxy_user_header="X-Forwarded-User"))
    assert get(base + "/api/status")[0] == 401
    assert get(base + "/api/status", headers={"X-Forwarded-User": "ada"})[0] == 200


def test_retry_only_when_allowed_signed_in_and_from_the_page(serve, failing_table, dashboard):
    table, fail = failing_table
    fail()
    name = f"{table.__module__.rpartition('.')[2]}.{table.__name__}"
    access = dashboard.Access(token=TOKEN)
    status, body, _ = get(f"{serve(access=access)}/api/retry/{name}", b"{}", headers=signed_in())
    assert status == 403
    assert "--allow-retry" in body
    assert len(table.jobs.errors) == 1
    allowed = serve(allow_retry=True, access=access)
    url = f"{allowed}/api/retry/{name}"
    assert get(url, data=b"{}")[0] == 401  # not signed in
    other_site = {"Origin": "http://127.0.0.1:9", **signed_in()}
    assert get(url, data=b"{}", headers=other_site)[0] == 403
    assert get(url, b"{}", headers={"Sec-Fetch-Site": "cross-site", **signed_in()})[0] == 403
    assert get(url, data=b"x=1", content_type="text/plain", headers=signed_in())[0] == 415
    assert get(f"{allowed}/api/retry/NoSuch.Table", b"{}", headers=signed_in())[0] == 404
    assert len(table.jobs.errors) == 1
    own_page = {"Origin": allowed, "Sec-Fetch-Site": "same-origin", **signed_in()}
    status, body, _ = get(url, data=b"{}", headers=own_page)
    assert (status, json.loads(body)["requeued"]) == (200, 1)
    deadline = time.monotonic() + 60
    while True:  # the refresher reads again at once (and this thread waits for it)
        body = get(allowed + "/api/status", headers=signed_in())[1]
        if next(row for row in json.loads(body) if row["table"] == name)["errors"] == 0:
            break
        assert time.monotonic() < deadline, "the action was not read again"
        time.sleep(0.1)
    assert len(table.jobs.errors) == 0
    assert len(table.jobs.pending) == 1


@ONE_COMBINATION
def test_idle_and_half_sent_connections_are_closed(serve, monkeypatch, dashboard):
    monkeypatch.setattr(dashboard, "REQUEST_SECONDS", 1.0)
    base = serve()
    port = int(base.rpartition(":")[2])

    def seconds_until_closed(payload):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(payload)
            started = time.monotonic()
            received = b""
            while chunk := client.recv(4096):
                received += chunk
            return time.monotonic() - started, received

    for payload in (b"", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"):
        seconds, received = seconds_until_closed(payload)
        assert 0.5 < seconds < 4, payload
        assert received == b"", payload
    # A whole request is answered, then the idle connection is closed too.
    seconds, received = seconds_until_closed(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200")
    assert received.endswith(b"ok\n")
    assert seconds < 4


class Switch:
    """A forwarding proxy in front of the test database that can be cut and restored:
    the database as the dashboard sees it when its server goes away and comes back."""

    def __init__(self):
        config = dj.config.database
        self.unix = str(config.host).startswith("/")  # the embedded server's socket folder
        self.target: str | tuple[str, int]
        self.address: str | tuple[str, int]
        if self.unix:
            self.target = f"{config.host}/.s.PGSQL.{config.port}"
            self.folder = tempfile.mkdtemp(prefix="switch-")
            self.address = f"{self.folder}/.s.PGSQL.{config.port}"
            self.env = {"DJ_HOST": self.folder, "DJ_PORT": str(config.port)}
        else:
            self.target = (str(config.host), int(config.port))
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.address = ("127.0.0.1", probe.getsockname()[1])
            self.env = {"DJ_HOST": "127.0.0.1", "DJ_PORT": str(self.address[1])}
        self.listener = None
        self.open = []

    def new_socket(self):
        return socket.socket(socket.AF_UNIX if self.unix else socket.AF_INET)

    def on(self):
        self.listener = self.new_socket()
        if isinstance(self.address, str):  # a Unix socket's path
            Path(self.address).unlink(missing_ok=True)
        else:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(self.address)
        self.listener.listen()
        threading.Thread(target=self.accept, args=(self.listener,), daemon=True).start()

    def off(self):
        """Stop listening and cut every forwarded connection."""
        if self.listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread: it stops
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        for connection in self.open:
            with contextlib.suppress(OSError):  # wakes the pipe threads, sends the FIN
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self.open.clear()

    def accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = self.new_socket()
            server.connect(self.target)
            self.open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


@pytest.mark.slow
# The connection is the subject, on every server; the starter pipeline stands for both.
@pytest.mark.only(project="starter")
def test_serve_starts_without_the_database_and_follows_it(pipeline, operations, project, database):
    """Nothing listens at first: the dashboard starts and says datajoint_up 0; the server
    comes, is cut off, comes back: the dashboard follows within a few readings."""
    switch = Switch()
    env = project.environment(**{**database.env, **switch.env})
    command = [sys.executable, "-m", project.package, "serve", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--refresh", "0.3"],
        env=env,
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None

    def up():
        body = get(url + "metrics")[1]
        families = {family.name: family for family in text_string_to_metric_families(body)}
        return families["datajoint_up"].samples[0].value

    def wait_for(value):
        deadline = time.monotonic() + 60
        while up() != value:
            assert time.monotonic() < deadline, f"datajoint_up never became {value}"
            time.sleep(0.2)

    try:
        line = process.stdout.readline()
        assert line.startswith("Dashboard on http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[2]
        assert get(url + "healthz")[:2] == (200, "ok\n")
        assert up() == 0
        status, body, _ = get(url + "api/status")
        assert status == 503
        assert "cannot use the database at" in json.loads(body)["error"]
        switch.on()
        wait_for(1)
        switch.off()  # the server goes away with the connection open
        wait_for(0)
        switch.on()
        wait_for(1)
        status, body, _ = get(url + "api/status")
        assert status == 200
        assert len(json.loads(body)) == len(operations.all_tables())
    finally:
        switch.off()
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    errors = process.stderr.read()
    assert "Traceback" not in errors
    assert "the database did not answer" in errors
    assert "answers again" in errors


def test_serve_command_runs_until_interrupted(pipeline, operations, project, database):
    """`python -m <package> serve --port 0` in its own process, as a user starts it."""
    process = subprocess.Popen(
        [sys.executable, "-m", project.package, "serve", "--port", "0"],
        env=project.environment(**database.env),
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        line = process.stdout.readline()  # printed once it listens
        assert line.startswith("Dashboard on http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[2]
        status, body, _ = get(url + "api/status")
        assert status == 200
        assert len(json.loads(body)) == len(operations.all_tables())  # every table
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(30) == 0
    assert "Traceback" not in process.stderr.read()


@ONE_COMBINATION
@pytest.mark.parametrize(
    ("argv", "token", "message"),
    [
        (["--port", "70000"], None, "--port 70000: a port is 0 to 65535"),
        (["--refresh", "0"], None, "--refresh 0: give a positive number"),
        (["--host", "0.0.0.0"], None, "--host 0.0.0.0 reaches beyond this machine"),
        (["--allow-retry"], None, "--allow-retry lets the page change jobs"),
        (["--allow-retry"], "short", "token is shorter than 16 characters"),
    ],
)
def test_serve_refuses_bad_arguments_in_one_line(
    database, capsys, monkeypatch, argv, token, message, dashboard, cli
):
    monkeypatch.delenv(dashboard.TOKEN_VARIABLE, raising=False)
    monkeypatch.setattr(dashboard, "CONTAINER_SECRETS", Path("/nonexistent"))
    monkeypatch.setattr(dashboard, "find_config_file", lambda: None)
    if token:
        monkeypatch.setenv(dashboard.TOKEN_VARIABLE, token)
    assert cli(["serve", *argv]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1


@ONE_COMBINATION
def test_serve_refuses_a_port_in_use(pipeline, capsys, dashboard, cli):
    taken = dashboard.bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        assert cli(["serve", "--port", str(port)]) == 2
    finally:
        taken.close()
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
