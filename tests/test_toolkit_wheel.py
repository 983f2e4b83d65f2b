"""The toolkit as a wheel of its own, `dj-pipeline-toolkit` (toolkit/pyproject.toml).

It builds from the template's toolkit folder (no second copy), ships only that folder,
takes its version from the folder's `__version__`, asks for the dependencies the generated
project asks for, and is released by .github/workflows/release-toolkit.yml. Installed from
the wheel next to a DataJoint 2.x package written by hand as the DataJoint guide lays one out
(tests/standalone_pipeline/, not made from the template), its `dj-toolkit` command and
`python -m dj_pipeline_toolkit` declare, check, populate and report on that package's
schemas as a lab member's least-privileged MariaDB account.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE, clean_environment, leftover_schemas, mariadb_root
from cookiecutter.main import cookiecutter
from packaging.requirements import Requirement
from test_ci_currency import MINIMUM_MAJORS

TOOLKIT_SOURCE = (
    TEMPLATE / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "toolkit"
)
BUILD = TEMPLATE / "toolkit"  # pyproject.toml, README.md, hatch_build.py: no source
STANDALONE = Path(__file__).parent / "standalone_pipeline"
RELEASE = TEMPLATE / ".github" / "workflows" / "release-toolkit.yml"
PACKAGE = "dj_pipeline_toolkit"


def uv() -> str:
    return shutil.which("uv") or pytest.fail("uv is required: pip install uv")


def run(*command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A program's run, its output captured (the caller checks the exit code)."""
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=600)  # fmt: skip


def files_under(folder: Path) -> set[Path]:
    """Every file in the folder, ignored ones too (bytecode, caches, build output)."""
    return {path for path in folder.rglob("*") if path.is_file()}


def toolkit_version() -> str:
    tree = ast.parse((TOOLKIT_SOURCE / "__init__.py").read_text(encoding="utf-8"))
    (version,) = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(target, "id", None) == "__version__" for target in node.targets)
    ]
    return version


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`uv build toolkit` as the release workflow runs it (sdist, then the wheel from the
    sdist), into a temporary folder; the template's tree is left as it was."""
    out = tmp_path_factory.mktemp("dist")

    def tree() -> set[Path]:  # not the source's bytecode: tests/toolkit import it meanwhile
        source = {path for path in files_under(TOOLKIT_SOURCE) if "__pycache__" not in path.parts}
        return files_under(BUILD) | source

    before = tree()
    subprocess.run([uv(), "build", "-q", str(BUILD), "--out-dir", str(out)], check=True)
    assert tree() == before, "the build left files in the tree"
    return out


def wheel_of(folder: Path) -> Path:
    (wheel,) = folder.glob("*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_holds_the_toolkit_folder_and_nothing_else(dist, tmp_path):
    version = toolkit_version()
    assert wheel_of(dist).name == f"{PACKAGE}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"{PACKAGE}-{version}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"{PACKAGE}-{version}.dist-info/entry_points.txt").decode()
    shipped = {name for name in names if not name.startswith(f"{PACKAGE}-{version}.dist-info/")}
    modules = {f"{PACKAGE}/{path.name}" for path in TOOLKIT_SOURCE.glob("*.py")}
    assets = {
        f"{PACKAGE}/dashboard_files/{path.name}"
        for path in (TOOLKIT_SOURCE / "dashboard_files").iterdir()
        if not path.name.startswith(".")
    }
    assert {"__init__.py", "__main__.py", "cli.py", "worker.py", "project.py"} <= {
        name.rpartition("/")[2] for name in modules
    }
    assert {f"{PACKAGE}/dashboard_files/index.html"} <= assets
    assert shipped == modules | assets
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in names if "test" in name.rpartition("/")[2]]
    assert f"Version: {version}" in metadata.splitlines()
    assert "dj-toolkit = dj_pipeline_toolkit.__main__:main" in entry_points

    # The wheel built straight from the folder (no sdist) is the same.
    direct = tmp_path / "direct"
    subprocess.run([uv(), "build", "-q", "--wheel", str(BUILD), "--out-dir", str(direct)],
                   check=True)  # fmt: skip
    with zipfile.ZipFile(wheel_of(direct)) as wheel:
        assert set(wheel.namelist()) == names

    # The sdist: the build files and the toolkit folder as the package, nothing else.
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.partition("/")[2] for name in archive.getnames()}
    build_files = {"pyproject.toml", "README.md", "hatch_build.py", "PKG-INFO", ".gitignore"}
    assert members - {""} <= build_files | {PACKAGE} | shipped | {f"{PACKAGE}/dashboard_files"}
    assert shipped <= members


def requirements(items: list[str]) -> set[str]:
    return {str(Requirement(item)) for item in items}


def test_the_wheel_asks_for_what_the_generated_project_asks_for(tmp_path):
    """One list of dependencies in two files: the generated pyproject.toml and the wheel's."""
    wheel = tomllib.loads((BUILD / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    rendered = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(tmp_path)))
    project = tomllib.loads((rendered / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # The defaults (MySQL, a file store) ask for DataJoint without extras, as the wheel does.
    assert requirements(wheel["dependencies"]) == requirements(project["dependencies"])
    extras, generated = wheel["optional-dependencies"], project["optional-dependencies"]
    assert requirements(extras["dashboard"]) == requirements(generated["dashboard"])
    assert requirements(extras["dev-db"]) <= requirements(generated["dev"])
    assert wheel["requires-python"] == project["requires-python"]
    assert wheel["dynamic"] == ["version"]
    assert wheel["scripts"] == {"dj-toolkit": f"{PACKAGE}.__main__:main"}
    # The generated project carries the same folder, __main__.py included (harmless there).
    copied = rendered / "src" / "workflow" / "toolkit"
    assert {path.name for path in copied.glob("*.py")} == {
        path.name for path in TOOLKIT_SOURCE.glob("*.py")
    }


def test_the_release_workflow_publishes_by_trusted_publishing_only():
    spec = yaml.safe_load(RELEASE.read_text(encoding="utf-8"))
    assert spec[True] == {"push": {"tags": ["toolkit-v*"]}}  # YAML reads `on` as True
    assert spec["permissions"] == {}
    jobs = spec["jobs"]
    assert set(jobs) == {"build", "publish"}
    assert jobs["build"]["permissions"] == {"contents": "read"}
    assert jobs["publish"]["permissions"] == {"id-token": "write"}
    assert jobs["publish"]["environment"]["name"] == "pypi"
    assert jobs["publish"]["needs"] == "build"
    runs = [step["run"] for step in jobs["build"]["steps"] if "run" in step]
    assert "uv build toolkit --out-dir dist" in runs
    for name, job in jobs.items():
        for step in job["steps"]:
            if "uses" not in step:
                continue
            action, _, ref = step["uses"].partition("@")
            assert action in MINIMUM_MAJORS, f"{action} has no row in MINIMUM_MAJORS"
            major = ref.removeprefix("v").split(".")[0]
            assert ref.startswith("v") and major.isdigit(), f"{action}@{ref}: not a release tag"
            assert int(major) >= MINIMUM_MAJORS[action], f"{action}@{ref} is behind"
            if action == "actions/checkout":
                assert step["with"]["persist-credentials"] is False, name
            if action == "pypa/gh-action-pypi-publish":
                assert not step.get("with", {}).keys() & {"password", "user"}, "a token"
    zizmor = shutil.which("zizmor", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))  # fmt: skip
    if zizmor is None:
        pytest.skip("zizmor is not installed (the test extra has it)")
    found = run(zizmor, "--offline", "--no-progress", "--persona=pedantic", str(RELEASE),
                cwd=TEMPLATE, env=dict(os.environ))  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr


# -- a package not made from the template, on the installed wheel --------------------------------


@pytest.fixture(scope="module")
def standalone(dist, tmp_path_factory) -> tuple[Path, Path]:
    """A fresh environment with the wheel and the hand-written package (a copy of
    tests/standalone_pipeline, installed as its pyproject.toml says), from the registries."""
    folder = tmp_path_factory.mktemp("standalone")
    venv, project = folder / ".venv", folder / "my-pipeline"
    shutil.copytree(STANDALONE, project)
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                    str(wheel_of(dist)), str(project)], check=True)  # fmt: skip
    return venv, project


@pytest.mark.slow
def test_a_bad_pipeline_value_is_one_line_and_exit_2(standalone):
    venv, project = standalone
    env = clean_environment()
    for value, says in [
        ("not_a_package", "no module named 'not_a_package'"),
        ("my_pipeline:missing", "my_pipeline has no attribute 'missing'"),
        ("my_pipeline:subject", "my_pipeline.subject is a builtins.module, not a Pipeline"),
        ("my pipeline", "give MODULE or MODULE:ATTRIBUTE"),
    ]:
        result = run(str(venv / "bin" / "dj-toolkit"), "--pipeline", value, "status",
                     cwd=project, env=env)  # fmt: skip
        assert result.returncode == 2, (value, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (value, result.stderr)
        assert says in lines[0], (value, lines[0])
        assert result.stdout == ""
    missing = run(str(venv / "bin" / "dj-toolkit"), "status", cwd=project, env=env)
    assert missing.returncode == 2 and "--pipeline" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_the_toolkit_runs_a_package_not_made_from_the_template(standalone, lab_accounts):
    venv, project = standalone
    account = lab_accounts["mariadb"]
    tests_env = account.test_prefix_env("my_pipeline")  # MY_PIPELINE_TEST_PREFIX
    prefix = tests_env["MY_PIPELINE_TEST_PREFIX"] + secrets.token_hex(3) + "_"
    env = clean_environment(**account.env, **tests_env, MY_PIPELINE_SCHEMA_PREFIX=prefix)

    def toolkit(*args: str, module: bool = False) -> subprocess.CompletedProcess:
        program = ([str(venv / "bin" / "python"), "-m", PACKAGE] if module
                   else [str(venv / "bin" / "dj-toolkit")])  # fmt: skip
        return run(*program, "--pipeline", "my_pipeline", *args, cwd=project, env=env)

    def python(code: str) -> str:
        done = run(str(venv / "bin" / "python"), "-c", code, cwd=project, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def status() -> dict[str, dict]:
        result = toolkit("status", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return {row["table"]: row for row in json.loads(result.stdout)}

    try:
        declared = toolkit("declare")
        assert declared.returncode == 0, declared.stdout + declared.stderr
        for schema in ("subject", "session", "ephys"):
            assert f"{schema} -> {prefix}{schema}" in declared.stdout
        assert f"schemas: {prefix}* (test)" in declared.stderr

        shown = toolkit("status", module=True)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["table", "tier", "rows", "done", "remaining", "reserved",
                                    "errors", "waiting"]  # fmt: skip
        assert [line.split()[:3] for line in lines[1:]] == [
            ["subject.Species", "Lookup", "2"],
            ["subject.Subject", "Manual", "0"],
            ["session.Session", "Manual", "0"],
            ["ephys.Probe", "Lookup", "2"],
            ["ephys.Recording", "Manual", "0"],
            ["ephys.ChannelTime", "Computed", "0"],
        ]

        checked = toolkit("check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"The {prefix!r} schemas match the code." in checked.stdout
        versions = toolkit("versions")
        assert versions.returncode == 0, versions.stdout + versions.stderr

        # A lab member enters sessions and recordings, as in a notebook.
        python(
            "from my_pipeline import pipeline, subject, session, ephys\n"
            "pipeline.activate()\n"
            "subject.Subject.insert1(dict(subject_id=1, species='mouse', date_of_birth='2026-01-02'))\n"
            "session.Session.insert([dict(subject_id=1, session_idx=i, session_date=f'2026-03-0{i}')"
            " for i in (1, 2)])\n"
            "ephys.Recording.insert([\n"
            "    dict(subject_id=1, session_idx=1, probe_type='tetrode', recording_path='a.dat',"
            " duration=10.0),\n"
            "    dict(subject_id=1, session_idx=2, probe_type='neuropixels', recording_path='b.dat',"
            " duration=2.5),\n"
            "])\n"
        )
        waiting = status()["ephys.ChannelTime"]
        assert (waiting["done"], waiting["remaining"], waiting["errors"]) == (0, 2, 0)

        worked = toolkit("worker", "--once", module=True)
        assert worked.returncode == 0, worked.stdout + worked.stderr
        assert "ChannelTime: 2 made, 0 failed" in worked.stderr
        rows = json.loads(python(
            "import json\n"
            "from my_pipeline import pipeline, ephys\n"
            "pipeline.activate(create=False)\n"
            "rows = ephys.ChannelTime.to_dicts(order_by='session_idx')\n"
            "print(json.dumps([[r['session_idx'], r['channel_seconds']] for r in rows]))\n"
        ).splitlines()[-1])  # DataJoint's own line comes first  # fmt: skip
        assert rows == [[1, 40.0], [2, 960.0]]  # 4 channels x 10 s, 384 channels x 2.5 s

        done = status()["ephys.ChannelTime"]
        assert (done["rows"], done["done"], done["remaining"], done["errors"]) == (2, 2, 0, 0)
        shown = toolkit("status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        (line,) = [line for line in shown.stdout.splitlines() if "ChannelTime" in line]
        assert line.split() == ["ephys.ChannelTime", "Computed", "2", "2", "0", "0", "0", "0"]

        # The toolkit's hints name the standalone command, not `python -m my_pipeline`.
        unset = {name: value for name, value in env.items() if name != "DJ_USER"}
        unconfigured = run(str(venv / "bin" / "dj-toolkit"), "--pipeline", "my_pipeline",
                           "status", cwd=project, env=unset)  # fmt: skip
        assert unconfigured.returncode == 2, unconfigured.stderr
        assert "run `dj-toolkit --pipeline my_pipeline dev-db start`" in unconfigured.stderr
        assert "Traceback" not in unconfigured.stderr
        usage = toolkit("worker", "--help")
        assert usage.stdout.startswith("usage: dj-toolkit --pipeline my_pipeline worker")
        usage = toolkit("--help", module=True)
        assert usage.stdout.startswith(f"usage: python -m {PACKAGE} --pipeline my_pipeline")
        assert "declare" in usage.stdout

        dropped = toolkit("reset", "--yes")
        assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    finally:
        names = [name for name in leftover_schemas(account) if name.startswith(prefix)]
        if names:
            drops = "".join(f"DROP DATABASE `{name}`;" for name in names)
            mariadb_root(f"SET FOREIGN_KEY_CHECKS=0;{drops}")
    assert not names, f"reset left {names}"
