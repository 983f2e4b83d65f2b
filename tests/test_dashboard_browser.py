"""A generated project's dashboard as browsers, Prometheus and labs meet it.

One project is rendered and installed. Its `serve` runs as a user starts it, against a
MariaDB account with a password and rights on its own prefix only, with a token and
--allow-retry. In headless Chromium (Debian's `chromium`) the user signs in, then a page
of another origin tries every way a page can send the retry action: the failed job stays
failed. A DNS-rebinding-style name (mapped to 127.0.0.1) gets the
refusal, not the dashboard. `promtool check metrics` (Debian's `prometheus`) accepts a
real /metrics answer. Wrong passwords on MariaDB and on a scram-sha-256 PostgreSQL end
`status` with one line. bench/scrape.py runs at a tiny size in tests/test_bench.py.
"""

from __future__ import annotations

import http.server
import json
import secrets
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_environment, install
from cookiecutter.main import cookiecutter

pytestmark = pytest.mark.slow

PACKAGE = "dashcheck"
TOKEN = secrets.token_urlsafe(24)

# The sample data, populated; then one job of the last table fails for real.
FILL = f"""
import sys
sys.path.insert(0, "tests")
from sample_data import SAMPLE_DATA
from {PACKAGE} import pipeline
pipeline.activate()
pipeline.insert_sample_data(SAMPLE_DATA)
table = pipeline.auto_tables()[-1]
key = table.proj().to_dicts(limit=1)[0]
(table & key).delete(prompt=False)
table.jobs.refresh()

def broken(self, key):
    raise RuntimeError("simulated failure")

table.make = broken
table.populate(key, reserve_jobs=True, suppress_errors=True)
print(f"{{table.__module__.rpartition('.')[2]}}.{{table.__name__}}")
"""

# What the lab fixture leaves: every schema under its prefix, downstream first.
DROP = f"""
import datajoint as dj
from {PACKAGE} import pipeline
pipeline.activate(create=False)
for module in reversed(pipeline.modules):
    module.schema.drop(prompt=False)
for name in dj.list_schemas():
    if name.startswith(pipeline.schema_prefix()):
        dj.Schema(name).drop(prompt=False)
"""

ERRORS = f"""
from {PACKAGE} import pipeline
pipeline.activate()
print(len(pipeline.auto_tables()[-1].jobs.errors))
"""


@pytest.fixture(scope="module")
def project(project_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard")
    path = cookiecutter(
        str(TEMPLATE),
        no_input=True,
        output_dir=str(out),
        extra_context={"project_name": "Dash Check", "package_name": PACKAGE},
    )
    install(project_env, path)
    return str(project_env / "bin" / "python"), Path(path)


@pytest.fixture(scope="module")
def lab(project, mariadb_lab):
    """The pipeline filled under the lab account's prefix: (env, failing table's name)."""
    python, root = project
    env = clean_environment(
        **mariadb_lab.env,
        **{f"{PACKAGE.upper()}_SCHEMA_PREFIX": f"{mariadb_lab.prefix}dash_"},
        DASHBOARD_TOKEN=TOKEN,
    )
    done = subprocess.run(
        [python, "-c", FILL], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    yield env, done.stdout.strip().splitlines()[-1]
    subprocess.run([python, "-c", DROP], cwd=root, env=env, capture_output=True, check=True)


@pytest.fixture(scope="module")
def dashboard(project, lab):
    """`python -m <package> serve --allow-retry` with a token; yields its base URL."""
    python, root = project
    env, _ = lab
    command = [python, "-m", PACKAGE, "serve", "--port", "0", "--allow-retry"]
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    assert line.startswith("Dashboard on http://127.0.0.1:"), line + process.stderr.read()
    yield line.split()[2].rstrip("/")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert "Traceback" not in process.stderr.read()


def fetch(url: str, data: bytes | None = None, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def failed_jobs(project, lab) -> int:
    python, root = project
    done = subprocess.run(
        [python, "-c", ERRORS], cwd=root, env=lab[0], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


def chromium(profile: Path, url: str, *options: str) -> str:
    """The DOM of `url` after headless Chromium has run its scripts (cookies kept in
    `profile` from one call to the next, as in one browser)."""
    browser = shutil.which("chromium") or pytest.fail("needs chromium (apt-get install chromium)")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--virtual-time-budget=8000", *options, "--dump-dom", url],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_promtool_accepts_the_metrics(dashboard):
    promtool = shutil.which("promtool") or pytest.fail(
        "needs promtool (apt-get install prometheus)"
    )
    status, body = fetch(dashboard + "/metrics", Authorization=f"Bearer {TOKEN}")
    assert status == 200
    assert "datajoint_up{" in body and "datajoint_table_errors{" in body
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (checked.stdout + checked.stderr).strip() == ""  # no lint remark either


def test_a_rebinding_name_gets_the_refusal_not_the_dashboard(dashboard, tmp_path):
    port = dashboard.rpartition(":")[2]
    dom = chromium(
        tmp_path,
        f"http://rebind.attacker.test:{port}/api/status",
        "--host-resolver-rules=MAP rebind.attacker.test 127.0.0.1",
    )
    assert "refused: this dashboard answers only to its own names" in dom
    assert "subject.Subject" not in dom
    assert fetch(dashboard + "/api/status", Host=f"rebind.attacker.test:{port}")[0] == 400


class Attacker(http.server.BaseHTTPRequestHandler):
    """Another site: one page that tries to make a signed-in browser re-queue the job."""

    page = ""

    def do_GET(self) -> None:
        body = self.page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


# Served from another origin of the same site (127.0.0.1, another port), so the browser
# sends the dashboard's cookie along: the hardest case. The user signs in first (the sign-in
# request is sent from here: headless Chromium keeps no cookie from one run to the next),
# then the page tries the ways a page can send the action: forms into frames, requests with
# the cookie. Then it opens the dashboard, with SCHEMA's tables if the JSON request was
# blocked. (Synchronous requests, and the navigation as the script runs: headless Chromium
# does not finish a navigation that a timer or a promise starts.)
ATTACK = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="plain" method="post" enctype="text/plain" target="sink1" action="DASH/api/retry/NAME">
<input name='{"x":"' value='"}'></form>
<form id="urlencoded" method="post" target="sink2" action="DASH/api/retry/NAME">
<input name="x" value="1"></form>
<script>
function send(path, type, body) {
  const request = new XMLHttpRequest();
  request.open("POST", "DASH" + path, false);
  request.withCredentials = true;
  request.setRequestHeader("Content-Type", type);
  try {
    request.send(body);
    return "answered";
  } catch (error) {
    return "blocked";
  }
}
send("/login", "application/x-www-form-urlencoded", "token=TOKEN");
document.getElementById("plain").submit();
document.getElementById("urlencoded").submit();
send("/api/retry/NAME", "text/plain", "{}");
const json = send("/api/retry/NAME", "application/json", "{}");
location.href = "DASH/?schema=" + (json === "blocked" ? "SCHEMA" : "none");
</script></body></html>"""


def test_another_origin_cannot_retry_for_a_signed_in_browser(dashboard, project, lab, tmp_path):
    _, table = lab
    assert failed_jobs(project, lab) == 1
    page = {"DASH": dashboard, "NAME": table, "TOKEN": TOKEN, "SCHEMA": table.split(".")[0]}
    Attacker.page = ATTACK
    for placeholder, value in page.items():
        Attacker.page = Attacker.page.replace(placeholder, value)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom = chromium(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
    assert 'class="pipeline-diagram"' in dom  # signed in: the cookie was sent to the dashboard
    assert 'class="retry"' in dom  # the page offers the action: the job is still failed
    assert 'class="table-diagram"' in dom  # the JSON request never passed the CORS preflight
    assert failed_jobs(project, lab) == 1
    # A program with the token may.
    status, body = fetch(
        f"{dashboard}/api/retry/{table}",
        b"{}",
        **{"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    assert (status, json.loads(body)["requeued"]) == (200, 1)
    assert failed_jobs(project, lab) == 0


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_a_wrong_password_is_one_line(project, lab_accounts, backend):
    python, root = project
    account = lab_accounts[backend]
    env = clean_environment(**account.env)
    env["DJ_PASS"] = account.env["DJ_PASS"] + " wrong"
    done = subprocess.run(
        [python, "-m", PACKAGE, "status"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if not line.startswith("schemas: ")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1, done.stderr
    user, host, port = (account.env[k] for k in ("DJ_USER", "DJ_HOST", "DJ_PORT"))
    assert errors[0].startswith(f"error: cannot use the database at {host}:{port} as {user}: ")
    assert any(words in errors[0] for words in ("Access denied", "password authentication"))
    assert env["DJ_PASS"] not in done.stderr
