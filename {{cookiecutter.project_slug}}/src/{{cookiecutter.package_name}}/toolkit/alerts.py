"""Alerts on new job errors, delivered by Apprise: Slack, Teams, Matrix, e-mail, webhooks...

For labs without Prometheus (with it, deploy/prometheus/ has alerting rules on the
dashboard's /metrics). Sent by `python -m <package> watch` (``--once`` or every
``--interval`` seconds) or by a worker started with ``--alerts``. Each failed job is reported
once per channel (remembered by table, key and error time in a small state file), and at
most one message goes out per ``min_interval`` seconds: errors met in between wait.

Where to send is a list of Apprise URLs (https://github.com/caronc/apprise/wiki), one per
line, in a secret file next to the database credentials: `.secrets/alerts.urls`, or
`/run/secrets/datajoint/alerts.urls` in containers; or, whitespace-separated, in the
environment variable ALERTS_URLS. Examples::

    slack://TokenA/TokenB/TokenC/#pipeline
    mailtos://pipeline:password@example.org?smtp=smtp.example.org&to=lab@example.org
    jsons://monitor.example.org/hooks/pipeline

The "alerts" section of datajoint.json (DataJoint ignores it) holds what is not secret::

    "alerts": {"min_interval": 300, "timeout": 30, "state_file": ".alerts-state.json"}

`timeout` is the most seconds one delivery may take in all. The settings of earlier
versions still work: ``"webhook": true`` with the URL in `alerts.webhook_url` posts
``{"text": ...}`` as before, and ``"email": {"host", "port", "starttls" or "ssl", "user",
"from", "to"}`` with the password in `alerts.smtp_password` sends mail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import datajoint as dj
from datajoint.settings import find_config_file

from . import operations
from .project import pipeline

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

SECTION = "alerts"
CONTAINER_SECRETS = Path("/run/secrets/datajoint")
SHOWN_PER_MESSAGE = 20  # errors listed in one message; the rest are counted

#: Runs in a child process, so that a delivery still going at its deadline can be killed
#: (a thread could not be): a server answering one byte at a time never trips a read timeout.
DELIVER = """
import json, logging, sys
import apprise
logging.basicConfig(format="%(message)s", level=logging.WARNING)
job = json.load(sys.stdin)
notifier = apprise.Apprise()
notifier.add(job["url"])
sys.exit(0 if notifier.notify(title=job["title"], body=job["body"]) else 1)
"""


class AlertError(ValueError):
    """The alert settings are wrong, or a message could not be delivered."""


@dataclass(frozen=True)
class Channel:
    """Where messages go: `url` is a secret, `name` (scheme and host) is what is shown."""

    name: str
    url: str = field(repr=False)


@dataclass
class Settings:
    """The "alerts" section of datajoint.json, with its secrets read."""

    channels: list[Channel] = field(default_factory=list)
    min_interval: float = 300.0
    timeout: float = 30.0
    state_file: Path = field(default_factory=lambda: Path(".alerts-state.json"))


def secret_file(name: str, folder: Path | None) -> Path | None:
    """One secret file in the project's .secrets/, else in the container's secrets."""
    for directory in (folder, CONTAINER_SECRETS):
        if directory is not None and (directory / name).is_file():
            return directory / name
    return None


def read_secret(name: str, folder: Path | None) -> str | None:
    """One secret file's text, without the line end an editor adds."""
    path = secret_file(name, folder)
    return None if path is None else path.read_text(encoding="utf-8").strip()


@contextlib.contextmanager
def apprise_quiet() -> Iterator[None]:
    """Silence Apprise's own log while a URL is checked: it would print part of the URL."""
    logger = logging.getLogger("apprise")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def channel(url: str, where: str, name: str | None = None) -> Channel:
    """A checked Apprise URL; a bad one raises AlertError naming `where`, not the URL."""
    scheme = url.partition("://")[0] if "://" in url else "none"
    if any(character.isspace() for character in url):
        raise AlertError(f"{where}: a URL cannot contain spaces (write a space as %20)")
    import apprise  # here: every command imports the worker, and so this module

    with apprise_quiet():
        plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        raise AlertError(
            f"{where}: not a URL Apprise can send to (scheme {scheme!r}; "
            "see https://github.com/caronc/apprise/wiki)"
        )
    if name is None:  # scheme and host, as Apprise shows them with secrets masked
        name = "/".join(plugin.url(privacy=True).split("/", 3)[:3])
    return Channel(name, url)


def webhook_url(url: str) -> str:
    """An Apprise URL that posts {"text": ...} to a webhook URL, as earlier versions did."""
    if any(character.isspace() for character in url):
        raise AlertError("alerts.webhook_url: a URL cannot contain spaces (write one as %20)")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AlertError("alerts.webhook_url must start with https:// or http:// and a host")
    query = [(f"-{k}", v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    # Apprise's JSON payload renamed: the message as "text", its other fields left out.
    query += [(":message", "text")] + [(f":{k}", "") for k in ("version", "title", "type")]
    query.append((":attachments", ""))
    scheme = "jsons" if parts.scheme == "https" else "json"
    return f"{scheme}://{parts.netloc}{parts.path or '/'}?{urlencode(query, quote_via=quote)}"


def email_url(email: dict[str, Any], password: str | None) -> str:
    """An Apprise mailto URL for the "email" settings of earlier versions."""
    mode = "ssl" if email.get("ssl") else "starttls" if email.get("starttls") else None
    query = {"from": email["from"], "to": ",".join(email["to"]), "smtp": email["host"]}
    if mode:
        query["mode"] = mode
    if email.get("user"):
        query.update(user=email["user"], **{"pass": password or ""})
    port = f":{int(email['port'])}" if email.get("port") else ""
    scheme = "mailtos" if mode else "mailto"
    return f"{scheme}://{quote(email['host'])}{port}/?{urlencode(query, quote_via=quote)}"


def unique_names(channels: list[Channel]) -> list[Channel]:
    """Number channels that show the same name (two on one host): each has its own state."""
    names = [c.name for c in channels]
    return [
        Channel(f"{c.name} #{names[:i].count(c.name) + 1}", c.url) if names.count(c.name) > 1 else c
        for i, c in enumerate(channels)
    ]


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the alert settings; a wrong one raises AlertError naming it (never a secret)."""
    config_file = config_file or find_config_file()
    if config_file is None:
        raise AlertError("no datajoint.json found here or above: alerts are configured there")
    try:
        section = json.loads(config_file.read_text(encoding="utf-8")).get(SECTION) or {}
    except json.JSONDecodeError as error:
        raise AlertError(f"{config_file}: not valid JSON ({error})") from None
    if not isinstance(section, dict):
        raise AlertError(f'{config_file}: "{SECTION}" must be an object')
    secrets_dir = config_file.parent / ".secrets"
    settings = Settings()
    if os.environ.get("ALERTS_URLS", "").strip():
        words = os.environ["ALERTS_URLS"].split()
        found = [(url, f"ALERTS_URLS, URL {n}") for n, url in enumerate(words, 1)]
    else:  # one URL a line; blank lines and # comments are skipped
        path = secret_file("alerts.urls", secrets_dir)
        lines = (
            [line.strip() for line in path.read_text(encoding="utf-8").splitlines()] if path else []
        )
        found = [
            (line, f"alerts.urls, line {n}")
            for n, line in enumerate(lines, 1)
            if line and not line.startswith("#")
        ]
    settings.channels = [channel(url, place) for url, place in found]
    if section.get("webhook"):
        url = os.environ.get("ALERTS_WEBHOOK_URL") or read_secret("alerts.webhook_url", secrets_dir)
        if not url:
            raise AlertError(
                "alerts.webhook is on but no URL: write it to .secrets/alerts.webhook_url"
            )
        settings.channels.append(channel(webhook_url(url), "alerts.webhook_url", "webhook"))
    email = section.get("email")
    if email:
        if not isinstance(email, dict):
            raise AlertError("alerts.email must be an object with host, from and to")
        missing = [key for key in ("host", "from", "to") if not email.get(key)]
        if missing:
            raise AlertError(f"alerts.email needs {', '.join(missing)}")
        email = {**email, "to": [email["to"]] if isinstance(email["to"], str) else email["to"]}
        password = os.environ.get("ALERTS_SMTP_PASSWORD") or read_secret(
            "alerts.smtp_password", secrets_dir
        )
        settings.channels.append(channel(email_url(email, password), "alerts.email", "email"))
    for key in ("min_interval", "timeout"):
        value = section.get(key, getattr(settings, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise AlertError(f"alerts.{key} must be a number of seconds, not {value!r}")
        setattr(settings, key, float(value))
    if settings.timeout <= 0:
        raise AlertError("alerts.timeout must be more than 0 seconds")
    settings.channels = unique_names(settings.channels)
    state = Path(section.get("state_file", settings.state_file))
    settings.state_file = state if state.is_absolute() else config_file.parent / state
    return settings


def error_id(table: str, key: dict, when: Any) -> str:
    """Identity of one failure: a job that fails again later is a new error."""
    text = json.dumps([table, sorted(key.items()), str(when)], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def current_errors(tables: Iterable[type[dj.Table]] | None = None) -> list[dict]:
    """Every job in error now: table, key, message, time, id."""
    found = []
    for table in pipeline.auto_tables() if tables is None else tables:
        name = f"{table.__module__.rpartition('.')[2]}.{table.__name__}"
        jobs = operations.existing_jobs(table)  # Table.jobs would declare it
        if jobs is None:
            continue
        for row in jobs.errors.proj("error_message", "completed_time", "host").to_dicts(
            order_by="completed_time"
        ):
            key = {k: row[k] for k in jobs.primary_key}
            found.append(
                {
                    "table": name,
                    "key": key,
                    "message": row["error_message"],
                    "when": row["completed_time"],
                    "host": row["host"],
                    "id": error_id(name, key, row["completed_time"]),
                }
            )
    return found


def format_message(errors: list[dict]) -> tuple[str, str]:
    """Subject line and text of one alert."""
    subject = f"{len(errors)} new job error(s) in the {pipeline.schema_prefix()!r} pipeline"
    lines = [subject + ":"]
    for error in errors[:SHOWN_PER_MESSAGE]:
        key = ", ".join(f"{k}={v}" for k, v in error["key"].items())
        message = error["message"].strip().splitlines()[0] if error["message"].strip() else ""
        when = str(error["when"])[:19]  # to the second
        lines.append(f"- {error['table']} ({key}) on {error['host'] or '?'} at {when}: {message}")
    if len(errors) > SHOWN_PER_MESSAGE:
        lines.append(f"... and {len(errors) - SHOWN_PER_MESSAGE} more")
    lines.append(f"See `{pipeline.command} status` or the dashboard.")
    return subject, "\n".join(lines)


def deliver(target: Channel, subject: str, text: str, timeout: float) -> str | None:
    """Send one message within `timeout` seconds in all: None when it was delivered, else
    why not. A delivery stopped at the deadline may still have arrived."""
    job = json.dumps({"url": target.url, "title": subject, "body": text})
    try:
        result = subprocess.run(
            [sys.executable, "-c", DELIVER],
            input=job,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        return f"cannot start the delivery: {error.strerror or error}"
    if result.returncode == 0:
        return None
    # Apprise's own warning, which names the host and the HTTP or SMTP status, not the URL.
    reasons = [line for line in result.stderr.splitlines() if line.strip()]
    reason = reasons[-1] if reasons else f"exit code {result.returncode}"
    return reason.replace(target.url, target.name)[:300]


def valid_state(state: Any) -> bool:
    """{channel: {"reported": [error ids], "last_sent": seconds}}"""
    return isinstance(state, dict) and all(
        isinstance(record, dict)
        and isinstance(record.get("reported"), list)
        and all(isinstance(i, str) for i in record["reported"])
        and isinstance(record.get("last_sent"), int | float)
        for record in state.values()
    )


def load_state(path: Path) -> dict | None:
    """The state file's records: {} when there is none yet, None when it is damaged."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        return None
    return state if valid_state(state) else None


def save_state(path: Path, state: dict) -> None:
    """Write the state atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(temporary, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One check at a time per state file (a worker's and `watch`), so none sends twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        if sys.platform != "win32":
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check(
    settings: Settings | None = None,
    tables: Iterable[type[dj.Table]] | None = None,
    now: float | None = None,
) -> dict[str, int]:
    """Report the errors not reported yet on each channel, unless one was sent too recently.

    Returns the number of errors sent per channel name. The errors of a message are recorded
    as reported before it is sent: a channel that refuses the message gets them back for the
    next call; one that does not answer in time keeps them recorded, since the message may
    have arrived. Either raises AlertError after every channel had its turn.
    """
    settings = settings or load_settings()
    now = time.time() if now is None else now
    errors = current_errors(tables)
    present = {error["id"] for error in errors}
    sent: dict[str, int] = {}
    failures = []
    try:
        with locked(settings.state_file):
            state = load_state(settings.state_file)
            if state is None:
                raise AlertError(rebuild_state(settings, present))
            for target in settings.channels:
                record = state.setdefault(target.name, {"reported": [], "last_sent": 0})
                # Forget errors that are gone (retried or deleted), so the state stays small.
                record["reported"] = [i for i in record["reported"] if i in present]
                new = [error for error in errors if error["id"] not in record["reported"]]
                if not new or now - record["last_sent"] < settings.min_interval:
                    continue
                before = dict(record)
                record["reported"] = record["reported"] + [error["id"] for error in new]
                record["last_sent"] = now
                save_state(settings.state_file, state)
                problem = deliver(target, *format_message(new), settings.timeout)
                if problem is None:
                    sent[target.name] = len(new)
                    log.info("alerts: reported %d new error(s) to %s", len(new), target.name)
                elif problem.startswith("no answer"):
                    failures.append(f"{target.name}: {problem}; not sent again (it may be there)")
                else:
                    state[target.name] = before
                    failures.append(f"{target.name}: {problem}")
            save_state(settings.state_file, state)
    except OSError as error:
        raise AlertError(f"{settings.state_file}: {error.strerror or error}") from None
    if failures:
        raise AlertError("could not send alerts: " + "; ".join(failures))
    return sent


def rebuild_state(settings: Settings, present: set[str]) -> str:
    """Replace a damaged state file, taking the errors present now as reported (sending
    them again could flood every channel), and keep the damaged one beside it."""
    path = settings.state_file
    os.replace(path, path.with_name(path.name + ".damaged"))
    reported = sorted(present)
    save_state(path, {c.name: {"reported": reported, "last_sent": 0} for c in settings.channels})
    return (
        f"{path}: damaged, kept as {path.name}.damaged and rebuilt: the {len(reported)} "
        "error(s) present now count as reported; new ones will be sent"
    )


def configured_settings() -> Settings:
    """The settings of datajoint.json, refusing them when they name no channel."""
    settings = load_settings()
    if not settings.channels:
        raise AlertError(
            "no alert channel: write Apprise URLs to .secrets/alerts.urls (or ALERTS_URLS), "
            'or set "webhook" or "email" in the "alerts" section of datajoint.json'
        )
    return settings


def watch(interval: float | None) -> int:
    """Check for new errors once (interval None) or every `interval` seconds until stopped."""
    settings = configured_settings()
    pipeline.activate()
    while True:
        try:
            sent = check(settings)
        except AlertError as error:  # not delivered: kept for the next check
            print(f"error: {error}", file=sys.stderr, flush=True)
            if interval is None:
                return 1
        else:
            for name, count in sent.items():
                print(f"{name}: reported {count} new error(s)", flush=True)
        if interval is None:
            return 0
        time.sleep(interval)
