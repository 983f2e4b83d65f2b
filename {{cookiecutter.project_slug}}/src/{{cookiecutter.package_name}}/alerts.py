"""Alerts on new job errors: to a Slack-compatible webhook and/or by e-mail.

Sent by `python -m <package> watch` (``--once`` or every ``--interval`` seconds) or by a
worker started with ``--alerts``. Each failed job is reported once (it is remembered by
table, key and error time in a small state file), and at most one message goes out per
``min_interval`` seconds: errors met in between wait for the next message.

Settings live in the "alerts" section of datajoint.json (DataJoint ignores it)::

    "alerts": {
      "webhook": true,
      "email": {"host": "smtp.example.org", "port": 587, "starttls": true,
                "user": "pipeline@example.org", "from": "pipeline@example.org",
                "to": ["lab@example.org"]},
      "min_interval": 300,
      "state_file": ".alerts-state.json"
    }

Secrets stay out of it, in files next to the database credentials (`.secrets/`, or
`/run/secrets/datajoint/` in containers): `alerts.webhook_url` (the webhook URL is a
credential) and `alerts.smtp_password`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import smtplib
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import datajoint as dj
from datajoint.settings import find_config_file

from . import activate, auto_tables, operations, schema_prefix

log = logging.getLogger(__name__)

SECTION = "alerts"
CONTAINER_SECRETS = Path("/run/secrets/datajoint")
SHOWN_PER_MESSAGE = 20  # errors listed in one message; the rest are counted


class AlertError(ValueError):
    """The alert settings are wrong, or a message could not be delivered."""


@dataclass
class Settings:
    """The "alerts" section of datajoint.json, with its secrets read."""

    webhook_url: str | None = None
    email: dict[str, Any] | None = None
    smtp_password: str | None = None
    min_interval: float = 300.0
    state_file: Path = field(default_factory=lambda: Path(".alerts-state.json"))

    @property
    def channels(self) -> list[str]:
        return [name for name, on in (("webhook", self.webhook_url), ("email", self.email)) if on]


def read_secret(name: str, folder: Path | None) -> str | None:
    """One secret file's text from the project's .secrets/ or the container's secrets."""
    for directory in (folder, CONTAINER_SECRETS):
        if directory is not None and (directory / name).is_file():
            return (directory / name).read_text(encoding="utf-8").strip()
    return None


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the alert settings; a setting with a wrong value raises AlertError naming it."""
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
    if section.get("webhook"):
        settings.webhook_url = os.environ.get("ALERTS_WEBHOOK_URL") or read_secret(
            "alerts.webhook_url", secrets_dir
        )
        if not settings.webhook_url:
            raise AlertError(
                "alerts.webhook is on but no URL: write it to .secrets/alerts.webhook_url"
            )
        if not settings.webhook_url.startswith(("https://", "http://")):
            raise AlertError("alerts.webhook_url must start with https:// or http://")
    email = section.get("email")
    if email:
        if not isinstance(email, dict):
            raise AlertError("alerts.email must be an object with host, from and to")
        missing = [key for key in ("host", "from", "to") if not email.get(key)]
        if missing:
            raise AlertError(f"alerts.email needs {', '.join(missing)}")
        if isinstance(email["to"], str):
            email["to"] = [email["to"]]
        settings.email = email
        settings.smtp_password = os.environ.get("ALERTS_SMTP_PASSWORD") or read_secret(
            "alerts.smtp_password", secrets_dir
        )
    try:
        settings.min_interval = float(section.get("min_interval", settings.min_interval))
    except (TypeError, ValueError):
        raise AlertError(
            f"alerts.min_interval must be a number of seconds, not {section['min_interval']!r}"
        ) from None
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
    for table in auto_tables() if tables is None else tables:
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
    subject = f"{len(errors)} new job error(s) in the {schema_prefix()!r} pipeline"
    lines = [subject + ":"]
    for error in errors[:SHOWN_PER_MESSAGE]:
        key = ", ".join(f"{k}={v}" for k, v in error["key"].items())
        message = error["message"].strip().splitlines()[0] if error["message"].strip() else ""
        lines.append(f"- {error['table']} ({key}) on {error['host'] or '?'}: {message}")
    if len(errors) > SHOWN_PER_MESSAGE:
        lines.append(f"... and {len(errors) - SHOWN_PER_MESSAGE} more")
    lines.append(f"See `python -m {__package__} status` or the dashboard.")
    return subject, "\n".join(lines)


def send_webhook(url: str, text: str) -> None:
    """POST {"text": ...}, the message format Slack, Mattermost and Teams workflows accept."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        response.read()


def send_email(settings: Settings, subject: str, text: str) -> None:
    """Send one e-mail through the configured SMTP server."""
    email = settings.email or {}
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = (
        subject,
        email["from"],
        ", ".join(email["to"]),
    )
    message.set_content(text)
    port = int(email.get("port", 465 if email.get("ssl") else 25))
    smtp_class = smtplib.SMTP_SSL if email.get("ssl") else smtplib.SMTP
    with smtp_class(email["host"], port, timeout=20) as smtp:
        if email.get("starttls"):
            smtp.starttls()
        if email.get("user"):
            smtp.login(email["user"], settings.smtp_password or "")
        smtp.send_message(message)


def load_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(path: Path, state: dict) -> None:
    """Write the state atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(temporary, path)


def check(
    settings: Settings | None = None,
    tables: Iterable[type[dj.Table]] | None = None,
    now: float | None = None,
) -> dict[str, int]:
    """Report the errors not reported yet on each channel, unless one was sent too recently.

    Returns the number of errors sent per channel. A channel that fails keeps its errors
    for the next call and raises AlertError after the other channels had their turn.
    """
    settings = settings or load_settings()
    now = time.time() if now is None else now
    errors = current_errors(tables)
    present = {error["id"] for error in errors}
    state = load_state(settings.state_file)
    sent: dict[str, int] = {}
    failures = []
    for channel in settings.channels:
        record = state.setdefault(channel, {"reported": [], "last_sent": 0})
        # Forget errors that are gone (retried or deleted), so the state stays small.
        record["reported"] = [i for i in record["reported"] if i in present]
        new = [error for error in errors if error["id"] not in record["reported"]]
        if not new or now - record["last_sent"] < settings.min_interval:
            continue
        subject, text = format_message(new)
        try:
            if channel == "webhook":
                send_webhook(settings.webhook_url or "", text)
            else:
                send_email(settings, subject, text)
        except (OSError, smtplib.SMTPException) as error:
            failures.append(f"{channel}: {error}")
            continue
        record["reported"] += [error["id"] for error in new]
        record["last_sent"] = now
        sent[channel] = len(new)
        log.info("alerts: reported %d new error(s) by %s", len(new), channel)
    save_state(settings.state_file, state)
    if failures:
        raise AlertError("could not send alerts: " + "; ".join(failures))
    return sent


def configured_settings() -> Settings:
    """The settings of datajoint.json, refusing them when they name no channel."""
    settings = load_settings()
    if not settings.channels:
        raise AlertError(
            'no alert channel: set "webhook": true and/or "email" in the "alerts" '
            "section of datajoint.json"
        )
    return settings


def watch(interval: float | None) -> int:
    """Check for new errors once (interval None) or every `interval` seconds until stopped."""
    settings = configured_settings()
    activate()
    while True:
        try:
            sent = check(settings)
        except AlertError as error:  # not delivered: kept for the next check
            print(f"error: {error}", file=sys.stderr, flush=True)
            if interval is None:
                return 1
        else:
            for channel, count in sent.items():
                print(f"{channel}: reported {count} new error(s)", flush=True)
        if interval is None:
            return 0
        time.sleep(interval)
