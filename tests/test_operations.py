"""Operating a realistic generated pipeline: check, status and reset on real servers.

The starter ephys module is replaced with code a lab would write (a Lookup with contents and
an enum, a Manual table with a date, json and defaults, an Imported table with a Part table
and a CURRENT_TIMESTAMP default, a Computed table with a unique index and key_source as a
property). Then, on MariaDB and PostgreSQL: `check` finds no drift after `declare`;
`status` counts every table and the keys waiting on manual input; editing the module is
reported attribute by attribute, key by key; `reset` drops the whole set.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import BACKENDS, clean_environment, install

pytestmark = pytest.mark.slow

PACKAGE = "opsflow"

EPHYS = '''\
"""Electrophysiology: probes entered by hand, recordings acquired, spikes sorted."""

import datajoint as dj
import numpy as np

from . import session

schema = dj.Schema()


@schema
class ProbeType(dj.Lookup):
    """Probe models in use."""

    definition = """
    # probe models
    probe_type : varchar(32)
    ---
    channels : int16  # number of channels
    kind = "silicon" : enum('silicon', 'tetrode', 'utah')
    """
    contents = [("neuropixels1", 384, "silicon"), ("tetrode4", 4, "tetrode")]


@schema
class ProbeInsertion(dj.Manual):
    """The probe inserted in a session, entered by the experimenter."""

    definition = """
    -> session.Session
    ---
    -> ProbeType
    inserted_on : date
    depth = null : float32  # microns
    notes = "" : varchar(255)
    settings = null : json
    """


@schema
class Recording(dj.Imported):
    """Raw signal acquired for each probe insertion."""

    definition = """
    -> session.Session
    -> ProbeInsertion
    ---
    sampling_rate : float64  # samples per second
    signal : <blob>  # raw samples
    started_at = CURRENT_TIMESTAMP : datetime
    """

    class Channel(dj.Part):
        definition = """
        -> master
        channel : int16
        ---
        gain = 1.0 : float32
        """

    def make(self, key):
        rng = np.random.default_rng(0)
        self.insert1({**key, "sampling_rate": 1000.0, "signal": rng.standard_normal(100)})
        self.Channel.insert({**key, "channel": c} for c in range(4))


@schema
class Spikes(dj.Computed):
    """Spike counts per recording."""

    definition = """
    -> Recording
    ---
    spike_count : int32
    unique index (spike_count)
    """

    @property
    def key_source(self):
        return Recording.proj()

    def make(self, key):
        self.insert1({**key, "spike_count": len(Spikes()) + 1})
'''

# Edits a lab makes to the declared module, and what `check` must say about each.
EDITS = [
    ('kind = "silicon"', 'kind = "tetrode"'),
    ("# number of channels", "# channel count"),
    ("depth = null : float32  # microns", "depth : float32  # microns"),
    ('    notes = "" : varchar(255)\n', "    operator : varchar(32)\n"),
    ("    -> ProbeInsertion\n    ---\n", "    -> ProbeInsertion\n    take : int16\n    ---\n"),
    ("gain = 1.0 : float32", "gain = 1.0 : float64"),
]
EXPECTED = [
    "attribute kind changed",
    "attribute channels changed",
    "attribute depth changed",
    "attribute operator is in code only",
    "attribute notes is in the database only",
    "primary key: database (subject_id, session_id), code (subject_id, session_id, take)",
    "attribute gain changed",
]

FILL = f"""
import sys
sys.path.insert(0, "tests")
from sample_data import SAMPLE_DATA
from {PACKAGE} import ephys, pipeline
pipeline.activate()
pipeline.insert_sample_data(SAMPLE_DATA)  # subjects and sessions
sessions = ephys.session.Session.proj().to_dicts()
ephys.ProbeInsertion.insert(
    {{**key, "probe_type": "neuropixels1", "inserted_on": "2026-01-0" + str(i + 1)}}
    for i, key in enumerate(sessions[:-1])  # the last session waits for its probe
)
for table in pipeline.auto_tables():
    table.populate(reserve_jobs=True)
"""


@pytest.fixture(scope="module")
def project(cookies_session, project_env) -> Path:
    result = cookies_session.bake(
        extra_context={
            "package_name": PACKAGE,
            "project_name": "Ops",
            "schemas": "subject; session <- subject; ephys <- session",  # ephys is the lab's
        }
    )
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    (path / "src" / PACKAGE / "ephys.py").write_text(EPHYS)
    install(project_env, path)
    return path


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_check_status_and_reset_on_a_realistic_pipeline(project, project_env, backend):
    prefix = f"otest_{secrets.token_hex(3)}_"  # not under the production prefix ops_
    env = clean_environment(**BACKENDS[backend], OPSFLOW_SCHEMA_PREFIX=prefix)
    python = str(project_env / "bin" / "python")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, *args], cwd=project, env=env, capture_output=True, text=True, check=False
        )

    def command(*args: str) -> subprocess.CompletedProcess:
        done = run("-m", PACKAGE, *args)
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert f"schemas: {prefix}* (personal)" in done.stderr
        return done

    module = project / "src" / PACKAGE / "ephys.py"
    module.write_text(EPHYS)
    try:
        assert command("declare").returncode == 0
        filled = run("-c", FILL)
        assert filled.returncode == 0, filled.stderr[-3000:]
        checked = command("check")
        assert checked.returncode == 0, checked.stdout
        status = command("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr[-2000:]
        rows = {row["table"]: row for row in json.loads(status.stdout)}
        assert list(rows)[:2] == ["subject.Subject", "session.Session"]
        assert rows["ephys.ProbeType"]["rows"] == 2  # Lookup contents
        assert rows["ephys.ProbeInsertion"]["rows"] == 2
        recording = rows["ephys.Recording"]
        assert (recording["done"], recording["remaining"]) == (2, 0)
        # Its parents (Session, ProbeInsertion) are both entered by hand: by the README's
        # definition no key is counted as waiting (nothing identifies it before it is entered).
        assert recording["waiting_on_manual_input"] == 0
        assert rows["ephys.Recording.Channel"]["rows"] == 8
        assert rows["ephys.Spikes"]["done"] == 2

        edited = EPHYS
        for old, new in EDITS:
            assert old in edited
            edited = edited.replace(old, new)
        module.write_text(edited)
        drifted = command("check")
        assert drifted.returncode == 1
        for expected in EXPECTED:
            assert expected in drifted.stdout, drifted.stdout
        assert "Table.alter()" in drifted.stdout
    finally:
        module.write_text(EPHYS)
        reset = command("reset", "--yes")
    assert reset.returncode == 0, reset.stdout + reset.stderr[-2000:]
    remaining = run(
        "-c",
        f"import datajoint as dj; print([s for s in dj.list_schemas() if s.startswith({prefix!r})])",
    )
    assert remaining.stdout.strip().splitlines()[-1] == "[]"
