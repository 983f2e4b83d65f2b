"""Day two: the lab replaces the starter tables, and the project keeps working.

A rendered project's schema modules are replaced by a realistic pipeline written
here (Lookup contents, Part tables, enums, dates, attach, json, a manual task table
between two computed tables, `key_source` as a property). Only the lab's files
change: the schema modules and versions in the package, the sample data and the tests
of the replaced tables. The rest of the generated suite (the template's framework
tests and the toolkit's smoke test) must pass unchanged on MariaDB, PostgreSQL and the
embedded database.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import install, run_project_tests

pytestmark = pytest.mark.slow

PACKAGE = "daytwo"

MODULES = {
    "subject": '''
        """Subjects and their species."""

        import datajoint as dj

        schema = dj.Schema()


        @schema
        class Species(dj.Lookup):
            definition = """
            species : varchar(32)
            """
            contents = [{"species": "mouse"}, {"species": "rat"}]


        @schema
        class Subject(dj.Manual):
            definition = """
            subject : varchar(16)
            ---
            -> Species
            sex : enum('F', 'M', 'U')
            date_of_birth : date
            info : json  # husbandry notes
            """
    ''',
    "session": '''
        """Sessions and the protocol documents attached to them."""

        import datajoint as dj

        from . import subject

        schema = dj.Schema()


        @schema
        class Session(dj.Manual):
            definition = """
            -> subject.Subject
            session_id : int32
            ---
            session_date : date
            task : enum('rest', 'reach')  # single quotes: MySQL keeps enum values in a comment
            """


        @schema
        class SessionProtocol(dj.Manual):
            definition = """
            -> Session
            ---
            protocol : <attach@main>
            """
    ''',
    "ephys": '''
        """Probes, recordings, spike sorting and its curation (the Elements pattern)."""

        import datajoint as dj
        import numpy as np

        from . import session

        schema = dj.Schema()


        @schema
        class Probe(dj.Manual):
            definition = """
            probe_type : varchar(32)
            ---
            vendor : varchar(32)
            """

            class Electrode(dj.Part):
                definition = """
                -> master
                electrode : int32
                ---
                depth : float64  # micrometres
                """


        @schema
        class Recording(dj.Imported):
            definition = """
            -> session.Session
            -> Probe
            ---
            sampling_rate : float64
            raw : <blob@main>
            """

            class Channel(dj.Part):
                definition = """
                -> master
                -> Probe.Electrode
                ---
                trace : <blob@main>
                """

            @property
            def key_source(self):
                """Only probes with electrodes; a property, since the schemas bind late."""
                return session.Session * (Probe & Probe.Electrode)

            def make(self, key):
                electrodes = (Probe.Electrode & key).keys(order_by="electrode")
                rng = np.random.default_rng(key["session_id"])
                raw = rng.standard_normal((len(electrodes), 400))
                self.insert1({**key, "sampling_rate": 1000.0, "raw": raw})
                self.Channel.insert(
                    [{**key, **electrode, "trace": raw[i]} for i, electrode in enumerate(electrodes)]
                )


        @schema
        class Clustering(dj.Computed):
            definition = """
            -> Recording
            ---
            unit_count : int32
            amplitudes : <blob@main>
            """

            def make(self, key):
                traces = [row["trace"] for row in (Recording.Channel & key).to_dicts()]
                amplitudes = np.abs(np.array(traces)).max(axis=1)
                self.insert1({**key, "unit_count": len(traces), "amplitudes": amplitudes})


        @schema
        class CurationTask(dj.Manual):
            """A curator's choice of parameters, entered after clustering."""

            definition = """
            -> Clustering
            curation_id : int32
            ---
            curator : varchar(32)
            params : json
            """


        @schema
        class Curation(dj.Computed):
            definition = """
            -> CurationTask
            ---
            good_units : int32
            """

            def make(self, key):
                threshold = (CurationTask & key).fetch1("params")["threshold"]
                amplitudes = (Clustering & key).fetch1("amplitudes")
                self.insert1({**key, "good_units": int((amplitudes > threshold).sum())})
    ''',
    "imaging": '''
        """Two-photon scans."""

        import datajoint as dj
        import numpy as np

        from . import session

        schema = dj.Schema()


        @schema
        class Scan(dj.Imported):
            definition = """
            -> session.Session
            ---
            frame_rate : float64
            movie : <blob@main>
            """

            def make(self, key):
                rng = np.random.default_rng(key["session_id"])
                self.insert1({**key, "frame_rate": 30.0, "movie": rng.random((5, 8, 8))})
    ''',
    "analysis": '''
        """Curated units against imaging activity."""

        import datajoint as dj

        from . import ephys, imaging

        schema = dj.Schema()


        @schema
        class Summary(dj.Computed):
            definition = """
            -> ephys.Curation
            -> imaging.Scan
            ---
            score : float64
            """

            @property
            def key_source(self):
                return ephys.Curation * imaging.Scan.proj()

            def make(self, key):
                good = (ephys.Curation & key).fetch1("good_units")
                movie = (imaging.Scan & key).fetch1("movie")
                self.insert1({**key, "score": float(good * movie.mean())})
    ''',
}

SAMPLE_DATA = '''
    """The lab's sample rows, in two passes: curation tasks need clustering results."""

    import datetime
    from pathlib import Path

    from daytwo import ephys, session, subject

    SAMPLE_DATA = [
        {
            subject.Subject: [
                {
                    "subject": "m001",
                    "species": "mouse",
                    "sex": "F",
                    "date_of_birth": datetime.date(2026, 1, 5),
                    "info": {"cage": 12, "diet": "standard"},
                },
                {
                    "subject": "r001",
                    "species": "rat",
                    "sex": "M",
                    "date_of_birth": datetime.date(2026, 2, 1),
                    "info": {"cage": 3},
                },
            ],
            session.Session: [
                {"subject": "m001", "session_id": 1, "session_date": datetime.date(2026, 3, 1), "task": "rest"},
                {"subject": "r001", "session_id": 1, "session_date": datetime.date(2026, 3, 2), "task": "reach"},
            ],
            session.SessionProtocol: [
                {"subject": "m001", "session_id": 1, "protocol": str(Path(__file__))},
            ],
            ephys.Probe: [
                {"probe_type": "np-1", "vendor": "IMEC"},
                {"probe_type": "spare", "vendor": "none"},  # no electrodes: not recorded
            ],
            ephys.Probe.Electrode: [
                {"probe_type": "np-1", "electrode": number, "depth": 20.0 * number}
                for number in range(3)
            ],
        },
        {
            ephys.CurationTask: lambda: [
                {**key, "curation_id": 1, "curator": "alice", "params": {"threshold": 1.0}}
                for key in ephys.Clustering.keys()
            ],
        },
    ]
'''

LAB_TEST = '''
    """The lab's own tests of its tables."""

    from daytwo import analysis, ephys


    def test_only_probes_with_electrodes_are_recorded(pipeline):
        assert set(ephys.Recording.to_arrays("probe_type")) == {"np-1"}


    def test_every_curation_task_is_computed(pipeline):
        assert len(ephys.Curation()) == len(ephys.CurationTask()) == len(ephys.Clustering()) > 0
        assert len(analysis.Summary()) == len(ephys.Curation())
'''


def replace_pipeline(project: Path) -> None:
    """Write the lab's pipeline over the starter one: only the lab's files change."""
    pipeline = project / "src" / PACKAGE
    names = list(MODULES)
    for name, source in MODULES.items():
        (pipeline / f"{name}.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        (project / "tests" / f"test_{name}.py").unlink()
    (project / "tests" / "sample_data.py").write_text(
        textwrap.dedent(SAMPLE_DATA).lstrip(), encoding="utf-8"
    )
    (project / "tests" / "test_lab.py").write_text(
        textwrap.dedent(LAB_TEST).lstrip(), encoding="utf-8"
    )
    versions = ", ".join(f'"{name}": "1.0.0"' for name in names)
    (pipeline / "version.py").write_text(
        f'__version__ = "1.0.0"\n\nSCHEMA_VERSIONS = {{{versions}}}\n', encoding="utf-8"
    )


@pytest.fixture(scope="module")
def day_two_project(cookies_session, project_env):
    result = cookies_session.bake(
        extra_context={"package_name": PACKAGE, "project_name": "Day Two"}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    # The starter pipeline has these schemas; the lab keeps the graph, replaces the tables.
    assert {path.stem for path in (project / "src" / PACKAGE).glob("*.py")} >= set(MODULES)
    replace_pipeline(project)
    install(project_env, project)
    # add-schema writes its module against the lab's tables, not the starter ones.
    added = subprocess.run(
        [str(project_env / "bin" / "python"), "-m", PACKAGE, "add-schema", "qc"]
        + ["--upstream", "ephys,imaging", "--role", "analysis"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    qc = (project / "src" / PACKAGE / "qc.py").read_text()
    assert "-> ephys.Curation" in qc and "-> imaging.Scan" in qc
    return project


@pytest.mark.parametrize("backend", ["mariadb", "postgresql", "embedded"])
def test_framework_tests_pass_after_the_lab_replaces_its_tables(
    day_two_project, project_env, backend
):
    result = run_project_tests(project_env, day_two_project, backend)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout
    print(result.stdout.splitlines()[-1])
