"""Alerts on real job errors, delivered by Apprise to local HTTP servers and a local SMTP server."""

import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ONE_COMBINATION, PACKAGE_TEMPLATE

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)
# The alert rules of a render (their placeholders are elsewhere than the metric names).
RULES = PACKAGE_TEMPLATE.parents[1] / "deploy" / "prometheus" / "rules.yml"


class Receiver(ThreadingHTTPServer):
    """A webhook on loopback that keeps what it is sent: `posts` holds (path, JSON body).

    `answer` is how it answers once it has read the request: "ok", "fail" (HTTP 500), a
    number of seconds to wait before its 200, or "dribble" (one byte every 2 s, no end).
    """

    daemon_threads = True

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.answer: str | float = "ok"
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.posts.append((self.path, body))
                if server.answer == "dribble":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    while not server.stop.wait(2):
                        self.wfile.write(b".")
                        self.wfile.flush()
                    return
                if isinstance(server.answer, float | int):
                    time.sleep(server.answer)
                self.send_response(500 if server.answer == "fail" else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def alerts(project):
    return project.tk.alerts


@pytest.fixture
def lab(project):
    """The project's command line and worker, as `python -m <package>` runs them."""

    class Commands:
        @staticmethod
        def cli(argv):
            return project.tk.cli.main(project.pipeline, argv)

        @staticmethod
        def worker(argv):
            return project.tk.worker.main(project.pipeline, argv)

    return Commands


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


class LoopbackSMTP(Controller):
    """aiosmtpd's server on a socket bound to a free loopback port."""

    def __init__(self, handler):
        self.sock = socket.create_server(("127.0.0.1", 0))
        super().__init__(handler, hostname="127.0.0.1", port=self.sock.getsockname()[1])

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self.sock)


@pytest.fixture
def smtp():
    """A local SMTP server; returns (port, list of the messages it received)."""
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(
                (envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default))
            )
            return "250 OK"

    controller = LoopbackSMTP(Handler())
    controller.start()
    yield controller.port, received
    controller.stop()


def write_project(folder, section, secrets=None):
    """A datajoint.json with an "alerts" section, and secret files next to it."""
    (folder / ".git").mkdir(exist_ok=True)  # DataJoint's search for datajoint.json stops here
    (folder / "datajoint.json").write_text(json.dumps({"alerts": section}))
    (folder / ".secrets").mkdir(exist_ok=True)
    for name, value in (secrets or {}).items():
        (folder / ".secrets" / name).write_text(value)
    return folder / "datajoint.json"


@pytest.fixture(autouse=True)
def no_alert_environment(monkeypatch):
    for name in ("ALERTS_URLS", "ALERTS_WEBHOOK_URL", "ALERTS_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def test_each_new_error_is_reported_once_to_every_channel(
    failing_table, receiver, smtp, tmp_path, alerts, lab
):
    table, fail = failing_table
    port, mails = smtp
    config = write_project(
        tmp_path,
        {
            "webhook": True,  # the settings of earlier versions
            "email": {"host": "127.0.0.1", "port": port, "from": "p@lab.org", "to": "me@lab.org"},
            "min_interval": 0,
        },
        {
            "alerts.urls": f"# Apprise URLs\n\njson://{receiver.address}/apprise\n",
            "alerts.webhook_url": f"http://{receiver.address}/hooks/pipeline?token=s3cret\n",
        },
    )
    settings = alerts.load_settings(config)
    key = fail()
    name = f"json://{receiver.address}"
    assert alerts.check(settings) == {name: 1, "webhook": 1, "email": 1}
    posts = dict(receiver.posts)
    assert set(posts) == {"/apprise", "/hooks/pipeline?token=s3cret"}
    text = posts["/hooks/pipeline?token=s3cret"]["text"]  # {"text": ...} as before
    assert list(posts["/hooks/pipeline?token=s3cret"]) == ["text"]
    assert posts["/apprise"]["message"] == text
    assert "1 new job error" in posts["/apprise"]["title"]
    assert table.__name__ in text
    assert "simulated failure" in text
    assert all(str(value) in text for value in key.values())
    assert len(mails) == 1
    recipients, mail = mails[0]
    assert recipients == ["me@lab.org"]
    assert "1 new job error" in mail["Subject"]
    assert "simulated failure" in mail.get_body(("plain",)).get_content()
    # Nothing new: nothing sent, also by a fresh process reading the state file.
    assert alerts.check(alerts.load_settings(config)) == {}
    assert (len(receiver.posts), len(mails)) == (2, 1)


def test_alerts_are_rate_limited_and_nothing_is_lost(failing_table, receiver, tmp_path, alerts):
    _, fail = failing_table
    config = write_project(
        tmp_path,
        {"webhook": True, "min_interval": 3600},
        {"alerts.webhook_url": f"http://{receiver.address}/"},
    )
    settings = alerts.load_settings(config)
    fail()
    start = time.time()
    assert alerts.check(settings, now=start) == {"webhook": 1}
    fail()  # the same key fails again: a new error
    assert alerts.check(settings, now=start + 60) == {}  # too soon
    assert len(receiver.posts) == 1
    assert alerts.check(settings, now=start + 3601) == {"webhook": 1}
    assert "1 new job error" in receiver.posts[1][1]["text"]


def test_a_refused_delivery_is_sent_later(failing_table, receiver, tmp_path, alerts):
    _, fail = failing_table
    closed = socket.create_server(("127.0.0.1", 0))
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    config = write_project(
        tmp_path,
        {"min_interval": 0},
        {"alerts.urls": f"json://{dead}/x\njson://{receiver.address}/y"},
    )
    receiver.answer = "fail"
    fail()
    with pytest.raises(alerts.AlertError) as refused:
        alerts.check(alerts.load_settings(config))
    assert f"json://{dead}: A Connection error" in str(refused.value)
    assert f"json://{receiver.address}: Failed to send JSON POST notification" in str(refused.value)
    receiver.answer = "ok"
    (tmp_path / ".secrets" / "alerts.urls").write_text(f"json://{receiver.address}/y")
    assert alerts.check(alerts.load_settings(config)) == {f"json://{receiver.address}": 1}
    assert len(receiver.posts) == 2  # the refused one, then the delivered one


@pytest.mark.slow
def test_a_server_that_never_finishes_answering_is_left_at_the_deadline(
    failing_table, receiver, tmp_path, alerts
):
    """One byte every 2 s never trips a read timeout: the deadline is for the whole delivery.
    The message may have arrived (it had here), so it is not sent again."""
    _, fail = failing_table
    config = write_project(
        tmp_path, {"min_interval": 0, "timeout": 5}, {"alerts.urls": f"json://{receiver.address}/"}
    )
    receiver.answer = "dribble"
    fail()
    start = time.monotonic()
    with pytest.raises(alerts.AlertError, match="no answer within 5 s; not sent again"):
        alerts.check(alerts.load_settings(config))
    # The server would dribble until the test ends: a wide margin for a loaded machine.
    assert time.monotonic() - start < 60
    assert len(receiver.posts) == 1
    receiver.answer = "ok"
    assert alerts.check(alerts.load_settings(config)) == {}
    assert len(receiver.posts) == 1


@pytest.mark.slow
def test_a_slow_success_is_sent_once_when_two_processes_check(
    failing_table, receiver, tmp_path, alerts, database, project
):
    """`watch` and a worker's --alerts share the state file: the second waits for the first,
    then finds the errors recorded."""
    _, fail = failing_table
    write_project(tmp_path, {"min_interval": 0}, {"alerts.urls": f"json://{receiver.address}/"})
    receiver.answer = 3.0
    fail()
    # Two processes, as in production: each with its own connection and its own look at the
    # state file.
    environment = project.environment(**database.env)
    checks = [
        subprocess.Popen(
            [sys.executable, "-m", project.package, "watch", "--once"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [check.communicate(timeout=120)[1] for check in checks]
    assert [check.returncode for check in checks] == [0, 0], errors
    assert len(receiver.posts) == 1


@pytest.mark.slow
# The state file's safety does not depend on the server: one backend, both pipelines.
@pytest.mark.only(database="embedded")
def test_watch_killed_at_random_moments_never_reports_an_error_twice(
    failing_table, receiver, tmp_path, alerts, database, project
):
    """`watch --once` killed (SIGKILL) at random moments, over the same error and then a new
    one: the state file is whole every time and no error reaches the channel twice. (Killed
    after recording an error and before sending it, that message is lost: at most once.)"""
    _, fail = failing_table
    config = write_project(
        tmp_path, {"min_interval": 0}, {"alerts.urls": f"json://{receiver.address}/"}
    )
    state = tmp_path / ".alerts-state.json"
    environment = project.environment(**database.env)
    seed = random.randrange(2**32)
    moments = random.Random(seed)
    for trial in range(6):
        if trial in (0, 3):
            fail()
        process = subprocess.Popen(
            [sys.executable, "-m", project.package, "watch", "--once"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            process.wait(timeout=moments.uniform(0.5, 6))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if state.exists():
            assert alerts.valid_state(json.loads(state.read_text())), f"seed {seed}"
    alerts.check(alerts.load_settings(config))
    time.sleep(3)  # a delivery whose parent was killed may still be under way
    reported = [
        line
        for _, body in receiver.posts
        for line in body["message"].splitlines()
        if line[:2] == "- "
    ]
    assert len(reported) == len(set(reported)), f"seed {seed}: {reported}"
    assert reported, f"seed {seed}: nothing reported"


def test_a_damaged_state_file_is_rebuilt_without_sending_history(
    failing_table, receiver, tmp_path, alerts
):
    _, fail = failing_table
    config = write_project(
        tmp_path, {"min_interval": 0}, {"alerts.urls": f"json://{receiver.address}/"}
    )
    state = tmp_path / ".alerts-state.json"
    fail()
    assert alerts.check(alerts.load_settings(config)) == {f"json://{receiver.address}": 1}
    fail()  # a second error, not reported yet when the file is damaged
    for damage in (b'{"json://x": {"reported": 3}}', b"\x00\xff{", state.read_bytes()[:20]):
        state.write_bytes(damage)
        with pytest.raises(alerts.AlertError, match="damaged, kept as .alerts-state.json.damaged"):
            alerts.check(alerts.load_settings(config))
        assert (tmp_path / ".alerts-state.json.damaged").read_bytes() == damage
        assert alerts.check(alerts.load_settings(config)) == {}
    assert len(receiver.posts) == 1
    fail()
    assert alerts.check(alerts.load_settings(config)) == {f"json://{receiver.address}": 1}
    assert "1 new job error" in receiver.posts[1][1]["title"]


def test_watch_once_reports_from_the_command_line(
    failing_table, receiver, tmp_path, monkeypatch, capsys, lab
):
    _, fail = failing_table
    write_project(tmp_path, {})
    monkeypatch.setenv("ALERTS_URLS", f"json://{receiver.address}/a  json://{receiver.address}/b")
    monkeypatch.chdir(tmp_path)
    fail()
    assert lab.cli(["watch", "--once"]) == 0
    out = capsys.readouterr().out
    assert f"json://{receiver.address} #1: reported 1 new error(s)" in out
    assert f"json://{receiver.address} #2: reported 1 new error(s)" in out
    assert sorted(path for path, _ in receiver.posts) == ["/a", "/b"]
    assert (tmp_path / ".alerts-state.json").is_file()


def test_the_worker_reports_after_its_pass(
    failing_table, receiver, tmp_path, monkeypatch, alerts, lab
):
    _, fail = failing_table
    write_project(
        tmp_path, {"webhook": True}, {"alerts.webhook_url": f"http://{receiver.address}/"}
    )
    monkeypatch.chdir(tmp_path)
    fail()
    assert lab.worker(["--once", "--alerts", "--log-level", "WARNING"]) == 0
    assert len(receiver.posts) == 1
    assert "simulated failure" in receiver.posts[0][1]["text"]


SECRET = "T0ken5ecret"


@ONE_COMBINATION
@pytest.mark.parametrize(
    ("secrets", "environment", "message"),
    [
        (
            {"alerts.urls": f"json://hooks.lab.org/{SECRET} x"},
            {},
            "alerts.urls, line 1: a URL cannot contain spaces",
        ),
        (
            {"alerts.urls": f"\n# ours\nhttps://chat.lab.org/hooks/{SECRET}"},
            {},
            "alerts.urls, line 3: not a URL Apprise can send to (scheme 'https'",
        ),
        (
            {},
            {"ALERTS_URLS": f"json://ok.lab.org/ {SECRET}"},
            "ALERTS_URLS, URL 2: not a URL Apprise can send to (scheme 'none'",
        ),
        (
            {"alerts.webhook_url": f"https://hooks.lab.org/{SECRET} x"},
            {},
            "alerts.webhook_url: a URL cannot contain spaces",
        ),
    ],
)
def test_a_bad_url_is_refused_at_start_without_showing_it(
    pipeline, tmp_path, monkeypatch, capsys, secrets, environment, message, alerts, lab
):
    write_project(tmp_path, {"webhook": "alerts.webhook_url" in secrets}, secrets)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert lab.cli(["watch", "--once"]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1
    with pytest.raises(SystemExit, match="2"):  # a looping worker does not start
        lab.worker(["--loop", "60", "--alerts"])
    worker_error = capsys.readouterr().err
    assert message in worker_error
    assert SECRET not in error + worker_error


@ONE_COMBINATION
def test_the_worker_refuses_alerts_without_a_channel(pipeline, tmp_path, monkeypatch, capsys, lab):
    write_project(tmp_path, {})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="2"):
        lab.worker(["--once", "--alerts"])
    assert "no alert channel" in capsys.readouterr().err


@ONE_COMBINATION
@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"webhook": True}, "no URL"),
        ({"email": {"host": "127.0.0.1"}}, "alerts.email needs from, to"),
        ({"webhook": False, "min_interval": "soon"}, "alerts.min_interval must be a number"),
        ({"timeout": 0}, "alerts.timeout must be more than 0"),
        ({}, "no alert channel"),
    ],
)
def test_watch_refuses_bad_settings_in_one_line(
    pipeline, tmp_path, monkeypatch, capsys, section, message, lab
):
    write_project(tmp_path, section)
    monkeypatch.chdir(tmp_path)
    assert lab.cli(["watch", "--once"]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1


def test_the_prometheus_rules_use_metrics_the_dashboard_exports(failing_table, dashboard):
    """deploy/prometheus/rules.yml alerts on these names: renaming a metric breaks them."""
    _, fail = failing_table
    fail()  # a job error, and so a worker seen
    sock = dashboard.bind("127.0.0.1", 0)
    # One reading, at the start: the test shares its connection with the reader thread.
    app = dashboard.create_app(refresher=dashboard.Refresher(period=3600))
    server = dashboard.make_server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
        with urllib.request.urlopen(url, timeout=60) as response:
            text = response.read().decode()
    finally:
        server.should_exit = True
        thread.join(10)
    exported = {family.name for family in text_string_to_metric_families(text)}
    used = set(re.findall(r"\bdatajoint_\w+", RULES.read_text(encoding="utf-8")))
    assert used, RULES
    assert used <= exported, f"not exported: {used - exported}"
