"""Day two with a real lab's code: the pipeline in tests/lab_pipeline/ replaces the starter.

tests/lab_pipeline/ is a lab's package as it writes DataJoint 2.x (src/labflow/: its
__init__.py building the toolkit's Pipeline, version.py, __main__.py, worker.py and seven
schema modules; tests/sample_data.py): seven schemas
(lab, subject, session, ephys, imaging, a merge table `activity` whose Part tables point to
ephys and imaging, analysis), Lookups with contents, Parts, key_source, composite keys,
nullable and renamed foreign keys, json, `<blob>`, `<blob@main>`, `<attach@main>` and numpy
make()s, with its sample data and schema versions. It is a plain folder of modules: dropping
it into a render (which adds the toolkit) is a copy. In that render:

- the generated suite (framework tests, toolkit smoke test) passes on MariaDB and PostgreSQL
  (the lab's accounts);
- `check` finds nothing after a fresh declare, and reports every real change (a table of
  cases) on both servers, while spellings of the same definition are not changes;
- ruff (check, format) and mypy pass on the lab's modules with the generated configuration.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    clean_environment,
    install,
    package_of,
    run_project_tests,
    scram_psql,
    unexpected_skips,
)

pytestmark = pytest.mark.slow

PACKAGE = "labflow"
LAB = Path(__file__).parent / "lab_pipeline"
LAB_PACKAGE = LAB / "src" / PACKAGE
# The lab's package but its schema modules: what a generated package also has.
PACKAGE_FILES = {"__init__", "__main__", "worker", "version"}


def schema_modules(package: Path) -> list[Path]:
    """The schema modules of a package folder (the toolkit folder aside)."""
    return [path for path in package.glob("*.py") if path.stem not in PACKAGE_FILES]


def swap_in_the_lab(project: Path) -> None:
    """Replace the starter schema modules (and the starter tables' tests, the lab's own to
    delete), the package's __init__.py, version.py and the sample data by the lab's; the
    toolkit folder stays as rendered."""
    package = project / "src" / package_of(project)
    for module in schema_modules(package):
        (project / "tests" / f"test_{module.stem}.py").unlink(missing_ok=True)
        module.unlink()
    for source in LAB_PACKAGE.glob("*.py"):
        shutil.copy(source, package / source.name)
    shutil.copy(LAB / "tests" / "sample_data.py", project / "tests" / "sample_data.py")


@pytest.fixture(scope="module")
def lab_project(cookies_session, project_env) -> Path:
    result = cookies_session.bake(
        extra_context={"package_name": PACKAGE, "project_name": "Lab Pipeline"}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    swap_in_the_lab(project)
    install(project_env, project)
    redraw = subprocess.run(
        [str(project_env / "bin" / "python"), "-m", f"{PACKAGE}.toolkit.scaffold"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert redraw.returncode == 0, redraw.stderr
    return project


def lab_member(lab_accounts, backend: str) -> dict[str, str]:
    """DJ_* settings of a lab member's account (a password, rights on its prefix only)."""
    account = lab_accounts[backend]
    settings = {**account.env, **account.test_prefix_env(PACKAGE)}
    if backend == "postgresql":  # a database of its own: suites running beside it do not count
        database = f"{account.env['DJ_USER']}_{secrets.token_hex(3)}"
        scram_psql(account.admin_env, f"CREATE DATABASE {database} OWNER {account.env['DJ_USER']}")
        settings["DJ_DATABASE_NAME"] = database
    return settings


# -- The framework tests ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_framework_tests_pass_on_the_lab_pipeline(lab_project, project_env, lab_accounts, backend):
    """Every generated test but the starter tables' own passes unchanged on the lab's
    graph: the framework tests, and the toolkit's commands on its tables."""
    result = run_project_tests(project_env, lab_project, lab_member(lab_accounts, backend))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert not unexpected_skips(result), result.stdout[-3000:]


# -- check: real changes, and only those ----------------------------------------------------------

# (module, text in it, its replacement, the table reported, what check says about it)
CHANGES = [
    ("session", "    is_training = 0 : bool\n", "    is_training = 0 : bool\n    weight = null : float32\n",
     "session.Session", "attribute weight is in code only"),
    ("session", "    session_quality = 1.0 : float32  # 0 (unusable) to 1\n", "",
     "session.Session", "attribute session_quality is in the database only"),
    ("imaging", "frame_count : int32", "frame_count : int64",
     "imaging.Scan", "attribute frame_count changed"),
    ("lab", 'time_zone = "UTC" : varchar(64)', 'time_zone = "Europe/Lisbon" : varchar(64)',
     "lab.Lab", "attribute time_zone changed"),
    ("lab", "admin = 0 : bool", "admin = 1 : bool",
     "lab.User", "attribute admin changed"),
    ("lab", "email = null : varchar(255)", "email : varchar(255)",
     "lab.User", "attribute email changed"),
    ("lab", "    unique index (email)\n", "",
     "lab.User", "index in the database only: UNIQUE INDEX (email)"),
    ("lab", '    rig_config = null : json  # amplifier and camera settings\n',
     '    rig_config = null : json  # amplifier and camera settings\n    index (room)\n',
     "lab.Rig", "index in code only: INDEX (room)"),
    ("lab", "# animal-care and experimental protocols", "# protocols",
     "lab.Protocol", "table comment"),
    ("ephys", "clustering_method : enum('kilosort2.5', 'kilosort4', 'threshold')",
     "clustering_method : enum('kilosort2.5', 'kilosort4', 'threshold', 'mountainsort5')",
     "ephys.ClusteringParamSet", "attribute clustering_method changed"),
    ("ephys", "x_coord : float32  # micrometres", "x_coord : float32  # microns",
     "ephys.ProbeType.Site", "attribute x_coord changed"),
    ("session", "    -> Session\n    ---\n    session_dir",
     "    -> Session\n    data_kind : varchar(8)\n    ---\n    session_dir",
     "session.SessionDirectory", "primary key: database (subject, session), code (subject, session, data_kind)"),
    ("subject", "    -> [nullable] lab.User.proj(responsible=\"user\")\n", "    -> lab.User.proj(responsible=\"user\")\n",
     "subject.Subject", "attribute responsible changed"),
    ("activity", "        -> imaging.Segmentation\n", "        -> imaging.Scan\n",
     "activity.ActivityOutput.CalciumTraces", "foreign key in code only"),
    ("analysis", "min_rate = 0.0 : float64", "min_rate = 0.5 : float64",
     "analysis.RateParams", "attribute min_rate changed"),
    ("ephys", "recorded_at = CURRENT_TIMESTAMP : datetime", "recorded_at = null : datetime",
     "ephys.EphysRecording", "attribute recorded_at changed"),
    ("analysis", "    rates : <blob>  # one value per unit or mask\n", "    rates : <blob@main>  # one value per unit or mask\n",
     "analysis.ActivitySummary", "attribute rates changed"),
]  # fmt: skip

# Spellings of the same definition: check must not report them.
SAME = [
    ("session", "session_quality = 1.0 : float32", "session_quality = 1 : float32"),
    ("subject", "    -> Subject\n    -> Allele\n", "    -> Allele\n    -> Subject\n"),  # key order
    ("imaging", "scanner = \"galvo-resonant\" : varchar(32)", "scanner = 'galvo-resonant' : varchar(32)"),
    ("lab", "admin = 0 : bool", "admin = false : bool"),
    ("ephys", "clustered_at = CURRENT_TIMESTAMP : datetime", "clustered_at = current_timestamp : datetime"),
]  # fmt: skip


def reported(output: str) -> dict[str, str]:
    """check's report by table: the text under each `== table` heading."""
    sections = re.split(r"^== (\S+)\n", output, flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2], strict=True))


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_check_reports_real_changes_and_nothing_else(lab_project, project_env, lab_accounts,
                                                     backend):  # fmt: skip
    account = lab_accounts[backend]
    prefix = f"{account.prefix}chk{secrets.token_hex(2)}_"
    env = clean_environment(**account.env, LABFLOW_SCHEMA_PREFIX=prefix)
    pipeline = lab_project / "src" / PACKAGE
    originals = {path: path.read_text() for path in schema_modules(pipeline)}

    def command(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(project_env / "bin" / "python"), "-m", PACKAGE, *args],
                              cwd=lab_project, env=env, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    def edit(changes) -> None:
        for module, old, new, *_ in changes:
            path = pipeline / f"{module}.py"
            text = path.read_text()
            assert text.count(old) == 1, f"{old!r} in {module}.py"
            path.write_text(text.replace(old, new))

    try:
        declared = command("declare")
        assert declared.returncode == 0, declared.stderr[-3000:]
        fresh = command("check")
        assert fresh.returncode == 0, fresh.stdout  # a fresh declare: nothing to report
        edit(SAME)
        same = command("check")
        assert same.returncode == 0, same.stdout
        for path, text in originals.items():
            path.write_text(text)
        edit(CHANGES)
        changed = command("check")
        assert changed.returncode == 1, changed.stdout
        report = reported(changed.stdout.split("To bring the database")[0])
        assert set(report) == {table for *_, table, _ in CHANGES}, changed.stdout
        for *_, table, expected in CHANGES:
            assert expected in report[table], f"{table}: {expected!r} not in\n{report[table]}"
    finally:
        for path, text in originals.items():
            path.write_text(text)
        reset = command("reset", "--yes")
    assert reset.returncode == 0, reset.stdout + reset.stderr[-2000:]


def test_check_finds_nothing_on_a_fresh_100_schema_declare(cookies_session, project_env,
                                                           lab_accounts):  # fmt: skip
    """The 100-schema render on PostgreSQL (its generated suite, check included, runs on
    MariaDB in test_generated_project.py)."""
    from test_generated_project import LARGE_SPEC

    result = cookies_session.bake(
        extra_context={"package_name": "bigcheck", "project_name": "Big", "schemas": LARGE_SPEC}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    install(project_env, project)
    account = lab_accounts["postgresql"]
    prefix = f"{account.prefix}big{secrets.token_hex(2)}_"
    env = clean_environment(**account.env, BIGCHECK_SCHEMA_PREFIX=prefix)

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(project_env / "bin" / "python"), "-m", "bigcheck", *args],
                              cwd=project, env=env, capture_output=True, text=True,
                              check=False)  # fmt: skip

    try:
        declared = command("declare")
        assert declared.returncode == 0, declared.stderr[-3000:]
        checked = command("check")
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
        assert "match the code" in checked.stdout
    finally:
        reset = command("reset", "--yes")
    assert reset.returncode == 0, reset.stderr[-2000:]


# -- ruff and mypy ---------------------------------------------------------------------------------


def test_ruff_and_mypy_accept_the_lab_pipeline(lab_project, project_env):
    """The lab's modules pass the generated configuration as they are: `.keys()` on tables
    (no SIM118 rewrite to iterating rows), and `A & key`, `A * B`, `A - B`, `A.proj()` on
    table classes type-check, with DataJoint installed (the lab's environment) or not (the
    pre-commit hook's)."""
    pipeline = [str(path.relative_to(LAB)) for path in LAB_PACKAGE.glob("*.py")]
    sources = "\n".join(path.read_text() for path in LAB_PACKAGE.glob("*.py"))
    for idiom in (".keys()", ".proj()", " & ", " * ", " - "):
        assert idiom in sources, f"the lab pipeline no longer uses {idiom!r}"
    tools = Path(sys.executable).parent  # the template's own ruff and mypy: no DataJoint here
    runs = [
        [str(project_env / "bin" / "ruff"), "check", "--no-cache", *pipeline],
        [str(project_env / "bin" / "ruff"), "format", "--check", "--no-cache", *pipeline],
        [str(project_env / "bin" / "mypy"), "--no-incremental", *pipeline],
        [str(tools / "mypy"), "--no-incremental", *pipeline],
    ]
    for command in runs:
        done = subprocess.run(command, cwd=lab_project, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, f"{' '.join(command[:2])}:\n{done.stdout}{done.stderr}"


# -- The README's backend exceptions ---------------------------------------------------------------

EXCEPTIONS = """
import json, pathlib, sys, tempfile, uuid
import datajoint as dj

attachment = pathlib.Path(tempfile.mkdtemp(), "note.txt")
attachment.write_text("hello")
cases = {
    "uuid": ("id : uuid", {"id": uuid.uuid4()}),
    "attach": ("id : int32\\n---\\nnote : <attach>", {"id": 1, "note": str(attachment)}),
    "bytes": ("id : int32\\n---\\nraw : bytes", {"id": 1, "raw": b"\\x00\\x01"}),
}
found = {}
for name, (definition, row) in cases.items():
    schema = dj.Schema(sys.argv[1] + name)
    try:
        table = schema(type("Case" + name.title(), (dj.Manual,), {"definition": definition}))
        table.insert1(row)
        with dj.config.override(download_path=tempfile.mkdtemp()):
            back = table.fetch1()
        found[name] = "same" if all(
            back[key] == value or (name == "attach" and pathlib.Path(back[key]).read_text()
                                   == attachment.read_text())
            for key, value in row.items()
        ) else "different"
    except Exception as error:  # the failure is what is measured
        found[name] = "fails"
    finally:
        schema.drop(prompt=False)
print(json.dumps(found))
"""


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_the_backend_exceptions_the_readmes_name(cookies_session, project_env, lab_accounts,
                                                 lab_project, backend):  # fmt: skip
    """DataJoint 2.3.5 on PostgreSQL: `uuid` cannot be inserted, an in-table `<attach>`
    cannot be fetched, `bytes` come back as a memoryview; on MariaDB all three work. The
    starter tables use none of them. (When a DataJoint release fixes one, this fails: update
    the READMEs.)"""
    account = lab_accounts[backend]
    done = subprocess.run(
        [str(project_env / "bin" / "python"), "-c", EXCEPTIONS, f"{account.prefix}x{secrets.token_hex(2)}_"],
        cwd=lab_project, env=clean_environment(**account.env), capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    if backend == "mariadb":
        assert found == {"uuid": "same", "attach": "same", "bytes": "same"}
    else:
        assert found == {"uuid": "fails", "attach": "fails", "bytes": "different"}
    for readme in (Path(__file__).parents[1] / "README.md",
                   Path(__file__).parents[1] / "{{cookiecutter.project_slug}}" / "README.md"):  # fmt: skip
        text = " ".join(readme.read_text().split())
        assert "a `uuid` attribute cannot be inserted" in text, readme
    starter = cookies_session.bake(extra_context={"package_name": "starter"})
    modules = schema_modules(Path(starter.project_path) / "src" / "starter")
    sources = "\n".join(module.read_text() for module in modules)
    assert not re.search(r":\s*(uuid|bytes|<attach>)", sources)


# -- The table diagram of a large pipeline -------------------------------------------------------

DIAGRAM = """
import json, sys
from labflow.toolkit import diagram
with diagram.declared_pipeline():
    print(json.dumps([diagram.tables_markdown(), diagram.tables_markdown(large=int(sys.argv[1]))]))
"""


def test_a_large_pipeline_gets_a_diagram_per_schema(lab_project, project_env):
    """Past `large` tables the Tables page shows the schemas, then each schema's tables with
    the tables of other schemas they point to; below it, one diagram."""
    done = subprocess.run([str(project_env / "bin" / "python"), "-c", DIAGRAM, "10"],
                          cwd=lab_project, env=clean_environment(), capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    whole, split = json.loads(done.stdout.splitlines()[-1])
    assert whole.count("```mermaid") == 1
    assert "analysis_ActivitySummary(" in whole
    fences = r"^## (\w+)\n\n```mermaid\n(.*?)```"
    sections = dict(re.findall(fences, split, re.DOTALL | re.MULTILINE))
    assert list(sections) == ["Schemas", "lab", "subject", "session", "ephys", "imaging",
                              "activity", "analysis"]  # fmt: skip
    assert sections["Schemas"].count(":::collapsed") == 7
    # activity's own tables, and the tables of ephys and imaging its Part tables point to
    nodes = set(re.findall(r"^\s+(\w+)[\[(]", sections["activity"], re.MULTILINE))
    assert nodes == {"activity_ActivityOutput", "activity_ActivityOutput_Spikes",
                     "activity_ActivityOutput_CalciumTraces", "ephys_Clustering",
                     "imaging_Segmentation"}  # fmt: skip
