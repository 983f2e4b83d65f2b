"""Alerts on real job errors, delivered to a local webhook receiver and a local SMTP server."""

import json
import socket
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from {{ cookiecutter.package_name }} import __main__ as cli
from {{ cookiecutter.package_name }} import alerts, worker


@pytest.fixture
def webhook():
    """A Slack-style webhook on loopback; returns (url, list of the JSON bodies it received)."""
    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/pipeline", received
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
            received.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    controller = LoopbackSMTP(Handler())
    controller.start()
    yield controller.port, received
    controller.stop()


def write_project(folder, section, secrets=None):
    """A datajoint.json with an "alerts" section, and secret files next to it."""
    (folder / ".git").mkdir()  # DataJoint's search for datajoint.json stops here
    (folder / "datajoint.json").write_text(json.dumps({"alerts": section}))
    (folder / ".secrets").mkdir()
    for name, value in (secrets or {}).items():
        (folder / ".secrets" / name).write_text(value)
    return folder / "datajoint.json"


def test_each_new_error_is_reported_once_by_webhook_and_email(
    failing_table, webhook, smtp, tmp_path
):
    table, fail = failing_table
    url, posts = webhook
    port, mails = smtp
    config = write_project(
        tmp_path,
        {
            "webhook": True,
            "email": {"host": "127.0.0.1", "port": port, "from": "p@lab.org", "to": "me@lab.org"},
            "min_interval": 0,
        },
        {"alerts.webhook_url": url + "\n"},
    )
    settings = alerts.load_settings(config)
    key = fail()
    assert alerts.check(settings) == {"webhook": 1, "email": 1}
    assert len(posts) == 1
    assert table.__name__ in posts[0]["text"]
    assert "simulated failure" in posts[0]["text"]
    assert all(str(value) in posts[0]["text"] for value in key.values())
    assert len(mails) == 1
    recipients, mail = mails[0]
    assert recipients == ["me@lab.org"]
    assert "1 new job error" in mail["Subject"]
    assert "simulated failure" in mail.get_payload(decode=True).decode()
    # Nothing new: nothing sent, also by a fresh process reading the state file.
    assert alerts.check(alerts.load_settings(config)) == {}
    assert (len(posts), len(mails)) == (1, 1)


def test_alerts_are_rate_limited_and_nothing_is_lost(failing_table, webhook, tmp_path):
    _, fail = failing_table
    url, posts = webhook
    config = write_project(
        tmp_path, {"webhook": True, "min_interval": 3600}, {"alerts.webhook_url": url}
    )
    settings = alerts.load_settings(config)
    fail()
    start = time.time()
    assert alerts.check(settings, now=start) == {"webhook": 1}
    fail()  # the same key fails again: a new error
    assert alerts.check(settings, now=start + 60) == {}  # too soon
    assert len(posts) == 1
    assert alerts.check(settings, now=start + 3601) == {"webhook": 1}
    assert "1 new job error" in posts[1]["text"]


def test_a_failed_delivery_is_sent_later(failing_table, webhook, tmp_path):
    _, fail = failing_table
    url, posts = webhook
    closed = socket.create_server(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    closed.close()
    config = write_project(
        tmp_path, {"webhook": True, "min_interval": 0}, {"alerts.webhook_url": dead_url}
    )
    fail()
    with pytest.raises(alerts.AlertError, match="webhook"):
        alerts.check(alerts.load_settings(config))
    (tmp_path / ".secrets" / "alerts.webhook_url").write_text(url)
    assert alerts.check(alerts.load_settings(config)) == {"webhook": 1}
    assert len(posts) == 1


def test_watch_once_reports_from_the_command_line(
    failing_table, webhook, tmp_path, monkeypatch, capsys
):
    _, fail = failing_table
    url, posts = webhook
    write_project(tmp_path, {"webhook": True}, {"alerts.webhook_url": url})
    monkeypatch.chdir(tmp_path)
    fail()
    assert cli.main(["watch", "--once"]) == 0
    assert "webhook: reported 1 new error(s)" in capsys.readouterr().out
    assert len(posts) == 1
    assert (tmp_path / ".alerts-state.json").is_file()


def test_the_worker_reports_after_its_pass(failing_table, webhook, tmp_path, monkeypatch):
    _, fail = failing_table
    url, posts = webhook
    write_project(tmp_path, {"webhook": True}, {"alerts.webhook_url": url})
    monkeypatch.chdir(tmp_path)
    fail()
    assert worker.main(["--once", "--alerts", "--log-level", "WARNING"]) == 0
    assert len(posts) == 1
    assert "simulated failure" in posts[0]["text"]


def test_the_worker_refuses_alerts_without_a_channel(pipeline, tmp_path, monkeypatch, capsys):
    write_project(tmp_path, {})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="2"):
        worker.main(["--once", "--alerts"])
    assert "no alert channel" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"webhook": True}, "no URL"),
        ({"email": {"host": "127.0.0.1"}}, "alerts.email needs from, to"),
        ({"webhook": False, "min_interval": "soon"}, "alerts.min_interval must be a number"),
        ({}, "no alert channel"),
    ],
)
def test_watch_refuses_bad_settings_in_one_line(
    pipeline, tmp_path, monkeypatch, capsys, section, message
):
    write_project(tmp_path, section)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALERTS_WEBHOOK_URL", raising=False)
    assert cli.main(["watch", "--once"]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1
