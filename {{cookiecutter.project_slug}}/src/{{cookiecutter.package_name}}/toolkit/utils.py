"""Helpers: the starter tables' simulated signals, and object-store set-up."""

import logging
import sys
import zlib
from pathlib import Path

import datajoint as dj
import numpy as np
from datajoint.expression import QueryExpression
from datajoint.settings import find_config_file
from pydantic import SecretStr

SAMPLING_RATE = 1000.0  # samples per second of the simulated acquisition
DURATION = 2.0  # seconds per simulated recording


def simulate_channels(source: str, key: dict, channels: int) -> tuple[float, list[np.ndarray]]:
    """Reproducible noisy oscillations of one source for one key, standing in for a recording.

    The channels share one frequency, so they correlate as neighbouring electrodes do.
    """
    rng = np.random.default_rng(zlib.crc32(f"{source} {sorted(key.items())}".encode()))
    time = np.arange(int(SAMPLING_RATE * DURATION)) / SAMPLING_RATE
    oscillation = np.sin(2 * np.pi * rng.uniform(4.0, 12.0) * time)
    return SAMPLING_RATE, [
        oscillation + 0.5 * rng.standard_normal(time.size) for _ in range(channels)
    ]


def mean_signal(rows: QueryExpression) -> np.ndarray:
    """The mean of the `signal` values of some rows (e.g. the channels of one recording)."""
    return np.mean([row["signal"] for row in rows.to_dicts()], axis=0)


def zscore(signal: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation."""
    return (signal - signal.mean()) / signal.std()


def combine_signals(inputs: list[np.ndarray]) -> dict:
    """Average the z-scored inputs; with several inputs, also their mean correlation.

    Inputs of different lengths are cut to the shortest.
    """
    length = min(len(signal) for signal in inputs)
    scored = np.array([zscore(np.asarray(signal[:length], dtype=float)) for signal in inputs])
    combined = scored.mean(axis=0)
    result = {"signal": combined, "peak": float(np.abs(combined).max())}
    if len(inputs) > 1:
        pairs = np.triu_indices(len(inputs), k=1)
        result["correlation"] = float(np.corrcoef(scored)[pairs].mean())
    return result


def prepare_stores() -> None:
    """Anchor relative file-store locations at the project folder and create them.

    DataJoint reads a file store's location relative to the working directory;
    anchoring it at datajoint.json lets notebooks and scripts in subfolders share
    one store.
    """
    config_file = find_config_file()
    root = config_file.parent if config_file else Path.cwd()
    for spec in dj.config.stores.values():
        if isinstance(spec, dict) and spec.get("protocol") == "file":
            location = root / spec["location"]
            location.mkdir(parents=True, exist_ok=True)
            spec["location"] = str(location)


def secret_value(value: object) -> str:
    """The clear text of a setting that DataJoint keeps as a pydantic SecretStr.

    `str()` of a SecretStr is the mask `**********`: never hand that on as a password.
    """
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return "" if value is None else str(value)


def database_environment() -> dict[str, str]:
    """The connection DataJoint is configured for, as the DJ_* variables of a program started
    from here (a worker, a notebook kernel, a database client's wrapper)."""
    database = dj.config.database
    environment = {
        "DJ_HOST": str(database.host),
        "DJ_PORT": str(database.port),
        "DJ_BACKEND": str(database.backend),
        "DJ_USER": database.user or "",
        "DJ_PASS": secret_value(database.password),
    }
    if database.name:
        environment["DJ_DATABASE_NAME"] = database.name
    return environment


def datajoint_logs_to_stderr() -> None:
    """Send DataJoint's log lines to stderr, keeping stdout for a command's output (--json)."""
    for handler in logging.getLogger("datajoint").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.stream = sys.stderr  # not setStream(): it flushes the old stream, maybe closed
