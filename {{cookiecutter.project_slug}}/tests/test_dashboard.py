"""The dashboard served for real on a free port, read over HTTP and in headless Chromium."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import datajoint as dj
import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }} import PIPELINE, dashboard, operations
from {{ cookiecutter.package_name }} import __main__ as cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture
def serve(pipeline):
    """Start the dashboard in a thread on a free loopback port; returns its base URL."""
    servers = []

    def start(allow_retry=False):
        sock = dashboard.bind("127.0.0.1", 0)
        server = dashboard.make_server(dashboard.create_app(allow_retry, 2.0), sock)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "the dashboard did not start"
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def get(url, data=None, content_type="application/json"):
    """(status, body text) of a GET, or of a POST when data is given."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_api_status_is_what_status_json_prints(serve, failing_table, capsys):
    table, fail = failing_table
    fail()
    status, body = get(serve() + "/api/status")
    assert status == 200
    assert cli.main(["status", "--json"]) == 1  # a job is in error
    assert json.loads(body) == json.loads(capsys.readouterr().out)
    row = next(row for row in json.loads(body) if row["table"].endswith("." + table.__name__))
    assert row["errors"] == 1
    assert "simulated failure" in row["latest_errors"][0]["message"]


def test_metrics_parse_as_prometheus_text(serve, failing_table, pipeline):
    table, fail = failing_table
    fail()
    status, body = get(serve() + "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert families["datajoint_up"].samples[0].value == 1
    done = {s.labels["table"]: s.value for s in families["datajoint_table_done"].samples}
    assert len(done) == len(pipeline.auto_tables())
    errors = {s.labels["table"]: s.value for s in families["datajoint_table_errors"].samples}
    assert errors[f"{table.__module__.rpartition('.')[2]}.{table.__name__}"] == 1
    # This process made the failed job: it is the worker whose heartbeat is exported.
    heartbeat = families["datajoint_worker_last_seen_seconds"].samples
    assert str(os.getpid()) in {sample.labels["pid"] for sample in heartbeat}
    assert all(sample.value >= 0 for sample in heartbeat)


def test_page_draws_the_diagram_and_progress_bars_in_chromium(serve, failing_table, tmp_path):
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
    assert all(f'data-schema="{name}"' in dom for name in PIPELINE)
    assert 'class="table-diagram"' in dom  # the tables of one schema, fetched on demand
    assert f">{table.__name__}</text>" in dom
    assert dom.count('class="bar table-progress"') == len(dashboard.auto_tables())
    assert "simulated failure" in dom  # the recent errors table
    assert 'class="worker"' in dom
    assert "Updated" in dom  # the script refreshed the page from /api/status


def test_no_password_in_any_response(serve, failing_table, monkeypatch):
    _, fail = failing_table
    fail()
    password = "S3cr3t-'\"$$-sentinel"
    monkeypatch.setitem(dj.config, "database.password", password)
    base = serve(allow_retry=True)
    paths = ["/", "/api/status", "/api/workers", "/metrics", "/static/dashboard.js", "/healthz"]
    paths += [f"/diagram/{schema}.svg" for schema in list(PIPELINE)[-3:]]
    for path in paths:
        status, body = get(base + path)
        assert status == 200, path
        assert password not in body, path


def test_retry_only_when_allowed(serve, failing_table):
    table, fail = failing_table
    fail()
    name = f"{table.__module__.rpartition('.')[2]}.{table.__name__}"
    status, body = get(f"{serve()}/api/retry/{name}", data=b"{}")
    assert status == 403
    assert "--allow-retry" in body
    assert len(table.jobs.errors) == 1
    allowed = serve(allow_retry=True)
    assert get(f"{allowed}/api/retry/{name}", data=b"x=1", content_type="text/plain")[0] == 415
    assert get(f"{allowed}/api/retry/NoSuch.Table", data=b"{}")[0] == 404
    status, body = get(f"{allowed}/api/retry/{name}", data=b"{}")
    assert (status, json.loads(body)["requeued"]) == (200, 1)
    assert len(table.jobs.errors) == 0
    assert len(table.jobs.pending) == 1


def test_serve_command_runs_until_interrupted(pipeline):
    """`python -m <package> serve --port 0` in its own process, as a user starts it."""
    config = dj.config.database
    password = config.password
    env = os.environ | {
        "DJ_HOST": str(config.host),
        "DJ_PORT": str(config.port),
        "DJ_USER": str(config.user),
        "DJ_PASS": password.get_secret_value() if password else "",
        "DJ_BACKEND": str(config.backend),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}", "serve", "--port", "0"],
        env=env,
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
        status, body = get(url + "api/status")
        assert status == 200
        assert len(json.loads(body)) == len(operations.all_tables())  # every table
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(30) == 0
    assert "Traceback" not in process.stderr.read()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port 70000: a port is 0 to 65535"),
        (["--refresh", "0"], "--refresh 0: give a positive number"),
    ],
)
def test_serve_refuses_bad_arguments_in_one_line(capsys, argv, message):
    assert cli.main(["serve", *argv]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1


def test_serve_refuses_a_port_in_use(pipeline, capsys):
    taken = dashboard.bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        assert cli.main(["serve", "--port", str(port)]) == 2
    finally:
        taken.close()
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
