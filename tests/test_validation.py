"""Every rule of the README's table is enforced, exactly as documented.

The table in README.md (between the rules markers) is the source of these tests:
each row's requirement must be the rule's text in the hook, and each row's example
must be refused by that rule, both by the hook's functions and by a real
cookiecutter run that leaves nothing behind. Then hostile answers (config-file
types, control characters, shadowing names, special spec files, overwrites into a
changed project) are refused with one line and no traceback, and unusual but
valid answers render into projects whose files read back what was typed, that
pass ruff and validate-pyproject, and that import and declare.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    BACKENDS,
    TEMPLATE,
    clean_environment,
    install,
    module_order,
    run_project_tests,
)
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config


def readme_rules() -> list[tuple[str, str, str]]:
    """(rule, requirement, example) for each row of the README's table of rules."""
    readme = (TEMPLATE / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- rules:start -->")[1].split("<!-- rules:end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        rule, requirement, example = (cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1])
        rows.append((rule.strip("`"), requirement.replace("\\|", "|"), example.strip("`")))
    return rows


RULE_ROWS = readme_rules()


def answers(example: str) -> dict[str, object]:
    """The answers of an example such as `object_store=s3 s3_bucket=X`.

    A value in braces or brackets is a YAML mapping or list, one in double quotes a YAML
    string (with escapes such as \\t): what a config file could give.
    """
    result: dict[str, object] = {}
    for word in shlex.split(example):
        key, _, value = word.partition("=")
        is_yaml = value.startswith(("{", "[", '"')) and not value.startswith(("{%", "{{"))
        result[key] = yaml.safe_load(value) if is_yaml else value
    return result


def rendered_context(**extra: object) -> tuple[dict, dict]:
    """The context cookiecutter would render with --no-input and these answers, and the
    answers as given (its `_cookiecutter`), as its main() makes them for the hooks."""
    context = generate_context(context_file=TEMPLATE / "cookiecutter.json", extra_context=extra)
    given = {k: v for k, v in context["cookiecutter"].items() if not k.startswith("_")}
    return prompt_for_config(context, no_input=True), copy.deepcopy(given)


def validate(pre_gen, **extra: object):
    """The hook's validation of these answers, as cookiecutter would run it."""
    return pre_gen.validate(*rendered_context(**extra))


def test_the_hook_holds_no_jinja_but_its_two_placeholders():
    """Cookiecutter renders the hook with Jinja: '{{' or '{%' elsewhere would break it."""
    source = (TEMPLATE / "hooks" / "pre_gen_project.py").read_text(encoding="utf-8")
    assert len(re.findall(r"\{\{|\{%|\{#", source)) == 2


def test_the_table_lists_every_rule_once(pre_gen):
    assert [rule for rule, _, _ in RULE_ROWS] == list(pre_gen.RULES)


@pytest.mark.parametrize(
    ("rule", "requirement", "example"), RULE_ROWS, ids=[row[0] for row in RULE_ROWS]
)
def test_documented_requirement_is_the_enforced_one(pre_gen, rule, requirement, example):
    assert requirement == pre_gen.RULES[rule]


@pytest.mark.parametrize(
    ("rule", "requirement", "example"), RULE_ROWS, ids=[row[0] for row in RULE_ROWS]
)
def test_documented_example_is_refused_by_its_rule(pre_gen, rule, requirement, example):
    with pytest.raises(pre_gen.InputError) as caught:
        validate(pre_gen, **answers(example))
    assert caught.value.rule == rule
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(f"rule {rule}: {pre_gen.RULES[rule]}")


@pytest.mark.parametrize(
    ("rule", "requirement", "example"), RULE_ROWS, ids=[row[0] for row in RULE_ROWS]
)
def test_cookiecutter_stops_with_one_line_and_writes_nothing(tmp_path, rule, requirement, example):
    args = [f"{key}={value}" for key, value in answers(example).items() if isinstance(value, str)]
    if len(args) < len(answers(example)):
        pytest.skip("a mapping or list cannot be given on the command line (covered above)")
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), *args],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode != 0
    first_line = result.stderr.splitlines()[0]
    assert first_line.startswith("ERROR: ") and first_line.endswith(f"rule {rule}: {requirement}")
    assert list(tmp_path.iterdir()) == []


# More refused answers per family, beyond the README's one example each.
MORE_REFUSED = [
    ("schema-name", {"schemas": "Subject"}),
    ("schema-name", {"schemas": "my schema"}),  # caught as syntax: see below
    ("schema-name", {"schemas": "2photon"}),
    ("schema-name", {"schemas": "café"}),
    ("schema-name", {"schemas": "_private"}),
    ("schema-sql", {"schemas": "order"}),
    ("schema-sql", {"schemas": "user", "database_backend": "postgresql"}),
    ("schema-keyword", {"schemas": "lambda"}),
    ("schema-module", {"schemas": "sample_data"}),
    ("schema-length", {"schemas": "b" * 45}),
    ("schema-length", {"schemas": "b" * 43}),  # 'my_pipeline_' counts 14 on MySQL: 42 fit
    ("schema-length", {"schemas": "c" * 40, "schema_prefix": "a_rather_long_project_prefix_"}),
    ("schema-length", {"schemas": "d" * 46, "schema_prefix": "lab_"}),  # the tests' prefixes
    (
        "schema-length",
        {"schemas": "d" * 45, "schema_prefix": "lab_", "database_backend": "postgresql"},
    ),
    ("schema-length", {"schemas": "u_" * 16, "schema_prefix": "lab_"}),  # 32, counting 48
    ("schema-length", {"schemas": "a", "schema_prefix": "a_" * 20}),  # no room left
    ("spec-syntax", {"schemas": "a -> b"}),
    ("spec-syntax", {"schemas": "a <- b c"}),
    ("spec-syntax", {"schemas": {"a": {"parents": ["b"]}}}),
    ("spec-unknown", {"schemas": {"a": 3}}),  # cookiecutter renders 3 as the name "3"
    ("spec-cycle", {"schemas": "a <- d; b <- a; c <- b; d <- c; e"}),
    ("spec-duplicate", {"schemas": "a; b <- a, a"}),
    ("package-name", {"package_name": "2lab"}),
    ("package-name", {"package_name": "import"}),
    ("package-name", {"package_name": "Lab"}),
    ("package-shadow", {"package_name": "numpy"}),
    ("package-shadow", {"package_name": "json"}),
    ("project-slug", {"project_slug": "-lab"}),
    ("project-slug", {"project_slug": "lab_"}),
    ("choice", {"license": "GPL"}),
    ("choice", {"object_store": "gcs"}),
    ("choice", {"python_min": "3.9"}),
    ("port", {"database_port": "0"}),
    ("port", {"database_port": "mysql"}),
    ("visible", {"project_name": "\u200b"}),  # zero-width space
    ("visible", {"project_name": "\u2800\u2800"}),  # blank braille patterns
    ("visible", {"project_name": "\u3164"}),  # Hangul filler, a "letter"
    ("visible", {"project_name": " \ufeff \u2060 "}),
    ("visible", {"project_name": "\u0301\u034f"}),  # marks on nothing
    ("visible", {"author_name": "\u200d"}),
    ("visible", {"author_name": ""}),
    ("host-url", {"database_host": "postgresql://lab@db.example.org:5432/lab"}),
    ("host-url", {"database_host": "db.example.org:3306"}),
    ("host-url", {"database_host": "db.example.org/lab"}),
    ("host", {"database_host": "[::1]"}),  # DataJoint 2.3.5 splits the host at ':'
    ("host", {"database_host": "::1"}),
    ("host", {"database_host": "/var/run/mysqld"}),  # a socket directory: PostgreSQL only
    ("email", {"author_email": "alice@"}),
    ("email", {"author_email": "alice at lab dot org"}),
    ("s3-bucket", {"object_store": "s3", "s3_bucket": "ab"}),
    ("s3-bucket", {"object_store": "s3", "s3_bucket": "lab..data"}),
    ("s3-bucket", {"object_store": "s3", "s3_bucket": "192.168.5.4"}),
    ("s3-bucket", {"object_store": "s3", "s3_bucket": "-lab"}),
    ("s3-endpoint", {"object_store": "s3", "s3_endpoint": "minio:99999"}),
    ("s3-endpoint", {"object_store": "s3", "s3_endpoint": "my minio"}),
    ("store-location", {"store_location": "/data/lab"}),
    ("store-location", {"store_location": "lab/../../etc"}),
    ("store-location", {"store_location": ""}),
]


@pytest.mark.parametrize(("rule", "extra"), MORE_REFUSED, ids=[f"{r}-{e}" for r, e in MORE_REFUSED])
def test_more_refused_answers(pre_gen, rule, extra):
    with pytest.raises(pre_gen.InputError) as caught:
        validate(pre_gen, **extra)
    assert caught.value.rule in {rule, "spec-syntax"}
    assert "\n" not in str(caught.value)


def test_refusals_show_what_to_give_instead(pre_gen):
    """One line: the value as given, what to give instead, the rule."""
    assert pre_gen.problem("database_host", "mysql://db.example.org", {}) == (
        "database_host: 'mysql://db.example.org' is a URL; give the host name alone: "
        f"db.example.org; rule host-url: {pre_gen.RULES['host-url']}"
    )
    assert "alone: db, and database_port=5433; " in pre_gen.problem("database_host", "db:5433", {})
    refused = pre_gen.problem("project_name", "\u200b\u2800", {})
    assert refused.startswith("project_name: '\\u200b\u2800' has no visible character (only ")
    assert "(only U+200B, U+2800); rule visible: " in refused
    assert "counts 48 characters (each '_' twice), 45 at most fit after the tests' " in (
        pre_gen.problem("schemas", "u_" * 16, {"schema_prefix": "lab_"})
    )


SCAFFOLD = TEMPLATE / "{{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}/toolkit"


@pytest.mark.parametrize("name", ["toolkit", "version", "worker"])
def test_the_packages_own_names_are_refused_in_one_line(tmp_path, pre_gen, name):
    """Schema modules sit beside the toolkit folder, version.py and worker.py."""
    expected = pre_gen.problem("schemas", f"subject; {name} <- subject", {})
    assert expected.startswith(f"schemas: {name!r} is a name the package keeps for itself (")
    assert expected.endswith(f"; rule schema-module: {pre_gen.RULES['schema-module']}")
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE),
         f"schemas=subject; {name} <- subject"],
        cwd=tmp_path, capture_output=True, check=False, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"ERROR: {expected}"
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_hook_and_add_schema_keep_the_same_names(pre_gen):
    """One source: the hook reads RESERVED from the template's scaffold, and every name the
    package or the generated tests take besides the schemas' is in it."""
    scaffold = pre_gen.load_template_scaffold(SCAFFOLD / "scaffold.py")
    names = pre_gen.project_names({})
    taken = {name for name in names.modules if pre_gen.IDENTIFIER.match(name)}
    taken |= {test.removeprefix("test_") for test in names.tests if test.startswith("test_")}
    assert taken == set(scaffold.RESERVED)
    for name in sorted(scaffold.RESERVED):
        assert "; rule schema-module: " in pre_gen.problem("schemas", name, {})


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
@pytest.mark.parametrize("prefix", ["", "lab_", "my_pipeline_", "a_rather_long_project_prefix_"])
def test_add_schema_bounds_the_length_as_the_hook_does(pre_gen, backend, prefix):
    scaffold = pre_gen.load_template_scaffold(SCAFFOLD / "scaffold.py")
    context = {"database_backend": backend, "schema_prefix": prefix}
    for name in [*("s" * n for n in range(1, 60)), *("u_" * n + "v" for n in range(1, 30))]:
        refused = "; rule schema-length: " in pre_gen.problem("schemas", name, context)
        assert bool(scaffold.length_problem(name, prefix, backend)) == refused, name


def test_add_schema_refuses_in_one_line(pre_gen, cookies):
    result = cookies.bake(extra_context={"schemas": "subject; session <- subject"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    scaffold = pre_gen.load_template_scaffold(project / "src/workflow/toolkit/scaffold.py")
    before = {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}
    tables = {"subject": ["Subject"], "session": ["Session"]}
    cases = {
        "toolkit": "'toolkit' is reserved: ",
        "version": "'version' is reserved: ",
        "worker": "'worker' is reserved: ",
        "s" * 43: "43 characters, 42 at most fit after the prefix 'my_pipeline_' on mysql",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)) as caught:
            scaffold.add_schema(project / "src" / "workflow", project / "tests", name,
                                ["subject"], tables=tables, blob="<blob@main>",
                                prefix="my_pipeline_")  # fmt: skip
        assert "\n" not in str(caught.value)
    after = {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}
    assert after == before
    for name in ("backup", "alerts", "s" * 42):  # toolkit modules' names are free
        scaffold.add_schema(project / "src" / "workflow", project / "tests", name, ["subject"],
                            tables=tables, blob="<blob@main>", prefix="my_pipeline_")  # fmt: skip
    assert module_order(project, "workflow")[-3:] == ["backup", "alerts", "s" * 42]


# Refused by copier as by cookiecutter: copier.yml's validators call the hook's rules.
COPIER_REFUSED = [
    (
        "database_host=mysql://db.example.org",
        "give the host name alone: db.example.org; rule host-url",
    ),
    ("database_host=[::1]", "rule host:"),
    ("project_name=\u200b\u2800", "has no visible character (only U+200B, U+2800); rule visible"),
    ("author_name=\u3164", "rule visible"),
    (
        "schemas=" + "a" * 43,
        "42 at most fit after the prefix 'my_pipeline_' on mysql; rule schema-length",
    ),
]


@pytest.mark.parametrize(("pair", "message"), COPIER_REFUSED, ids=[p for p, _ in COPIER_REFUSED])
def test_copier_refuses_them_too(tmp_path, template_repo, pair, message):
    project = tmp_path / "project"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("copier")), "copy", "--quiet", "--trust", "--defaults",
         "--data", pair, str(template_repo), str(project)],
        cwd=tmp_path, capture_output=True, check=False, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    # copier shows a refused --data answer in a traceback of its own, ending with the hook's line.
    assert message in result.stderr.splitlines()[-1], result.stderr[-2000:]
    assert not project.exists()


ACCEPTED = [
    {"schemas": "match; case_data <- match", "database_backend": "postgresql"},  # soft keyword
    {"schemas": "a" * 42},  # after 'my_pipeline_'
    {"schemas": "a" * 45, "schema_prefix": "lab_"},
    {"schemas": "a" * 44, "schema_prefix": "lab_", "database_backend": "postgresql"},
    {"schemas": "u_" * 22, "schema_prefix": "lab_", "database_backend": "postgresql"},
    {"schemas": "v_" * 15, "schema_prefix": "lab_"},  # 30 characters, counting 45 on MySQL
    {"schemas": "select_data", "database_backend": "postgresql"},
    {"schemas": "user", "database_backend": "mysql"},  # reserved in PostgreSQL only
    {"schema_prefix": ""},
    {"database_host": "/var/run/postgresql", "database_backend": "postgresql"},
    {"database_host": "db-1.lab_net.example"},
    {"database_host": "10.0.0.7"},
    {"project_name": "\U0001f9e0", "author_name": "\u674e"},  # one symbol, one letter
    {"project_name": "Lab\u200b"},  # an invisible character beside visible ones
    {"object_store": "s3", "s3_endpoint": "https://s3.eu-west-1.amazonaws.com"},
    {"object_store": "s3", "s3_endpoint": "minio:9000", "s3_bucket": "lab.data-2026"},
    {"object_store": "none", "store_location": "../ignored/without/a/store"},
    {"project_name": 'José Müller\'s "Lab" \\o/ {x}'},
    # The toolkit's modules live in src/<package>/toolkit/: their names are free for schemas.
    {"schemas": "backup; alerts <- backup; utils <- alerts; health <- utils"},
    {"schemas": "dashboard; access <- dashboard; cli <- access; scaffold <- cli; drift <- cli"},
    {"schemas": "object_store; operations <- object_store; jobs <- operations"},
]


@pytest.mark.parametrize("extra", ACCEPTED, ids=[str(e) for e in ACCEPTED])
def test_unusual_but_valid_answers_are_accepted(pre_gen, extra):
    assert validate(pre_gen, **extra)


def test_spec_from_a_yaml_file(pre_gen, tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("mouse:\n  description: Mice.\nscan: [mouse]\n")
    plan = pre_gen.plan_pipeline("pipeline.yaml", spec_dirs=("/nonexistent", str(tmp_path)))
    assert [(s.name, s.upstream, s.description) for s in plan] == [
        ("mouse", (), "Mice."),
        ("scan", ("mouse",), ""),
    ]
    spec.write_text("schemas: 'a; b <- a'\n")
    assert [s.name for s in pre_gen.plan_pipeline(str(spec))] == ["a", "b"]
    spec.write_text("a: [b\n")
    with pytest.raises(pre_gen.InputError, match=r"not valid YAML at line \d"):
        pre_gen.plan_pipeline(str(spec))
    spec.write_text("- a\n- b\n")
    with pytest.raises(pre_gen.InputError, match="neither a mapping nor text"):
        pre_gen.plan_pipeline(str(spec))


def test_yaml_spec_file_on_the_command_line(tmp_path):
    (tmp_path / "lab.yml").write_text("raw:\n  role: acquisition\nclean:\n  upstream: raw\n")
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), "schemas=lab.yml"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    init = (tmp_path / "my-pipeline" / "src" / "workflow" / "__init__.py").read_text()
    assert "MODULES = (raw, clean)" in init


def test_overwrite_into_an_existing_directory_changes_nothing_on_refusal(tmp_path):
    existing = tmp_path / "my-pipeline"
    (existing / "src").mkdir(parents=True)
    (existing / "src" / "mine.py").write_text("x = 1\n")
    (existing / "README.md").write_text("my own readme\n")
    before = {path: path.read_bytes() for path in existing.rglob("*") if path.is_file()}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-f",
            str(TEMPLATE),
            "database_port=http",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("ERROR: database_port: 'http' is not a port number")
    after = {path: path.read_bytes() for path in existing.rglob("*") if path.is_file()}
    assert after == before
    assert sorted(p.name for p in existing.rglob("*")) == ["README.md", "mine.py", "src"]


def test_large_pipeline_renders_in_dependency_order(cookies):
    spec = "; ".join(
        ["s0"] + [f"s{i} <- s{i - 1}" + (f", s{i - 7}" if i >= 7 else "") for i in range(1, 120)]
    )
    result = cookies.bake(extra_context={"schemas": spec})
    assert result.exit_code == 0, result.exception
    assert module_order(Path(result.project_path), "workflow") == [f"s{i}" for i in range(120)]


# --- hostile answers, through cookiecutter itself ----------------------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def bake(tmp_path: Path, capfd, *, extra=None, config=None, overwrite=False):
    """Run cookiecutter (in this process; the hooks run as scripts, as always) into
    tmp_path/out; `config` is the YAML text of each default_context value."""
    from cookiecutter.main import cookiecutter

    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    config_file = None
    if config is not None:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(
            "default_context:\n" + "".join(f"  {k}: {v}\n" for k, v in config.items()),
            encoding="utf-8",
        )
    capfd.readouterr()
    try:
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=extra,
            output_dir=str(out),
            config_file=str(config_file) if config_file else None,
            default_config=config_file is None,  # not the user's ~/.cookiecutterrc
            overwrite_if_exists=overwrite,
        )
    except FailedHookException:
        return False, capfd.readouterr().err
    return True, capfd.readouterr().err


def assert_refused(ok: bool, err: str, rule: str) -> None:
    """One line naming the rule, first; no traceback (ours would be the hook's)."""
    assert not ok
    assert "Traceback" not in err, err
    first = err.splitlines()[0]
    assert first.startswith("ERROR: ") and f"; rule {rule}: " in first, err


HOSTILE_CONFIG = [  # (rule, default_context values as YAML text)
    ("answer-text", {"project_slug": "null"}),
    ("answer-text", {"project_slug": ""}),  # an empty YAML value is null
    ("answer-text", {"license": "[MIT, GPL-3.0]"}),
    ("answer-text", {"audit_trail": "yes"}),  # unquoted: a boolean
    ("answer-text", {"python_min": "3.10"}),  # unquoted: the number 3.1
    ("answer-text", {"author_name": "{first: Ada}"}),
    ("text", {"description": '"\\ud800"'}),  # a lone surrogate
    ("text", {"description": '"before\\0after"'}),  # NUL
    ("text", {"author_name": '"Ada\\nLovelace"'}),
    ("text", {"project_name": '"Lab \\u202e evil"'}),  # a bidirectional override
    ("text", {"project_name": "x" * 300}),
    ("spec-syntax", {"schemas": "[a, {b: a}]"}),
    ("spec-unknown", {"schemas": "{a: {upstream: 3}}"}),  # cookiecutter renders 3 as "3"
]


@pytest.mark.parametrize(
    ("rule", "config"), HOSTILE_CONFIG, ids=[str(c) for _, c in HOSTILE_CONFIG]
)
def test_hostile_config_file_answers_are_refused(tmp_path, capfd, rule, config):
    assert_refused(*bake(tmp_path, capfd, config=config), rule)
    assert list((tmp_path / "out").iterdir()) == []


HOSTILE = [  # (rule, answers as on the command line)
    ("port", {"database_port": "３３０６"}),  # fullwidth digits
    ("port", {"database_port": "٣٣٠٦"}),  # Arabic-Indic digits
    ("port", {"database_port": "03306"}),
    ("package-name", {"package_name": "p" * 100}),
    ("project-slug", {"project_slug": "p" * 65}),
    ("schema-prefix", {"schema_prefix": "p" * 41}),
    ("schema-shadow", {"schemas": "os"}),
    ("schema-shadow", {"schemas": "str"}),
    ("schema-shadow", {"schemas": "subject; self <- subject"}),
    ("schema-shadow", {"schemas": "sys"}),
    ("schema-shadow", {"schemas": "json"}),
    ("schema-shadow", {"schemas": "dj"}),
    ("schema-shadow", {"schemas": "numpy"}),
    ("schema-shadow", {"schemas": "subject; inputs <- subject"}),
    ("schema-module", {"schemas": "toolkit"}),  # the template's folder in the package
    ("schema-module", {"schemas": "version"}),
    ("schema-module", {"schemas": "sample_data"}),  # tests/sample_data.py
    ("schema-module", {"schemas": "pipeline"}),  # the package's Pipeline, tests/test_pipeline.py
    ("schema-module", {"schemas": "worker"}),
    ("schema-module", {"schemas": "activate"}),
    ("package-shadow", {"package_name": "dotenv"}),
    ("package-shadow", {"package_name": "pytest"}),
    ("package-shadow", {"package_name": "pandas"}),
    ("package-shadow", {"package_name": "conftest"}),
    ("package-shadow", {"package_name": "tests"}),
    ("package-shadow", {"package_name": "typing"}),
    ("github-org", {"github_org": 'lab"'}),
    ("github-org", {"github_org": "my_lab"}),
    ("github-org", {"github_org": "a--b"}),
    ("github-org", {"github_org": "a" * 40}),
    ("email", {"author_email": 'a"b@lab.org'}),
    ("email", {"author_email": "a@lab.org\\"}),
    ("email", {"author_email": "josé@lab.org"}),  # setuptools refuses a non-ASCII name
    ("email", {"author_email": "a@lab.o"}),  # CITATION.cff's schema wants a longer end
    ("store-location", {"store_location": 'lab"data'}),
    ("store-location", {"store_location": "lab/$HOME"}),
    ("store-location", {"store_location": "lab//data"}),
    ("host", {"database_host": 'db"'}),
    ("host", {"database_host": "db\\host"}),
    ("s3-bucket", {"object_store": "s3", "s3_bucket": 'lab"data'}),
    ("spec-file", {"schemas": "/dev/zero"}),
    ("spec-file", {"schemas": "/"}),
]


@pytest.mark.parametrize(("rule", "extra"), HOSTILE, ids=[str(e) for _, e in HOSTILE])
def test_hostile_answers_are_refused(tmp_path, capfd, rule, extra):
    assert_refused(*bake(tmp_path, capfd, extra=extra), rule)
    assert list((tmp_path / "out").iterdir()) == []


def special_spec(tmp_path: Path, kind: str) -> str:
    """A spec file of some hostile kind; returns the answer naming it."""
    path = tmp_path / f"{kind}.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "latin1":
        path.write_bytes("café: null\n".encode("latin-1"))
    elif kind == "nul":
        path.write_text("a: null\nb\0: a\n")
    elif kind == "huge":
        with path.open("wb") as file:
            file.truncate(1 << 30)  # sparse: a gigabyte that costs nothing
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "zero-link":
        path.symlink_to("/dev/zero")
    elif kind == "laughs":
        path.write_text(BILLION_LAUGHS)
    elif kind == "deep":
        path.write_text("[" * 50_000 + "]" * 50_000)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    return str(path)


SPECIAL = [
    "binary",
    "latin1",
    "nul",
    "huge",
    "directory",
    "zero-link",
    "laughs",
    "deep",
    "dangling",
]


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_spec_files_are_refused(pre_gen, tmp_path, kind):
    with pytest.raises(pre_gen.InputError) as caught:
        pre_gen.plan_pipeline(special_spec(tmp_path, kind))
    assert caught.value.rule == "spec-file"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", ["fifo", "laughs", "binary"])
def test_special_spec_files_through_the_command_line(tmp_path, kind):
    """A FIFO nobody writes to would block a plain open(): the command returns at once."""
    spec = special_spec(tmp_path, kind)
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), f"schemas={spec}"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"ERROR: schemas: {spec!r} ")
    assert "; rule spec-file: " in result.stderr.splitlines()[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == [Path(spec).name]


def test_a_lone_surrogate_from_the_command_line(tmp_path):
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE)]
        + [b"description=caf\xe9".decode("utf-8", "surrogateescape")],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    first = result.stderr.decode("utf-8", "replace").splitlines()[0]
    assert first.startswith("ERROR: description: ") and "; rule text: " in first
    assert list(tmp_path.iterdir()) == []


def test_a_list_of_entries_in_a_config_file_is_the_whole_spec(tmp_path, capfd):
    ok, err = bake(tmp_path, capfd, config={"schemas": "[mouse, 'scan <- mouse', 'stats <- scan']"})
    assert ok, err
    assert module_order(tmp_path / "out" / "my-pipeline", "workflow") == ["mouse", "scan", "stats"]


FAILING_OVERWRITES = [
    {"description": '"\\ud800"'},
    {"description": '"\\0"'},
    {"schemas": "os"},
    {"package_name": "dotenv"},
    {"github_org": '"lab\\""'},
    {"license": "[MIT, GPL]"},
    {"schemas": "[a, {b: a}]"},
]


@pytest.mark.parametrize("config", FAILING_OVERWRITES, ids=[str(c) for c in FAILING_OVERWRITES])
def test_overwrite_changes_no_file_of_the_users_when_an_answer_fails(tmp_path, capfd, config):
    """With --overwrite-if-exists into a project the user has changed: no file changes,
    none appears, whatever answer fails."""
    ok, err = bake(tmp_path, capfd, config={})
    assert ok, err
    project = tmp_path / "out" / "my-pipeline"
    (project / "README.md").write_text("my own readme\n")
    (project / "tests" / "test_pipeline.py").write_text("def test_mine(): pass\n")
    (project / "src" / "workflow" / "subject.py").unlink()
    (project / "notes.txt").write_text("mine\n")
    before = {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}
    ok, err = bake(tmp_path, capfd, config=config, overwrite=True)
    assert not ok and "Traceback" not in err and err.startswith("ERROR: "), err
    after = {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}
    assert after == before


# --- unusual but valid answers render into working projects -------------------------

# The longest schema names the hook accepts after the prefix 'lab_' (the tests' 19-character
# prefixes leave no more room): 45 characters on MySQL, 44 on PostgreSQL; and a name mostly
# of '_', which counts twice on MySQL (its grants escape it).
LONGEST = {
    "mariadb": ("mysql", 45, "u_" * 14 + "uvw"),
    "postgresql": ("postgresql", 44, "u_" * 21 + "uv"),
}


def longest_spec(length: int, underscored: str) -> str:
    """Every kind of starter table, long-named: an entity, an event, two imported tables (one
    the underscored name), computed tables of one and of two inputs."""
    a, b, d, e, f = ("s" * (length - 1) + end for end in "abdef")
    u = underscored
    return f"{a}; {b} [acquisition] <- {a}; {u} <- {b}; {d} <- {u}; {e} <- {d}, {u}; {f} <- {a}"


def longest_answers(server: str) -> dict[str, str]:
    backend, length, underscored = LONGEST[server]
    return {
        "database_backend": backend,
        "schema_prefix": "lab_",
        "schemas": longest_spec(length, underscored),
    }


QUOTES = 'O\'Brien "Bob" \\o/ {x} $HOME `id` <!-- # % \'\'\' """'
UNUSUAL = [
    {"project_name": QUOTES},
    {"description": QUOTES, "author_name": QUOTES},
    {"description": ""},
    {"author_name": "José Müller-Lüdenscheidt", "author_email": "jose@universität.example"},
    {"author_email": "o'brien+lab.data@mail.uni-example.org"},
    {"project_name": "脳科学ラボ", "description": "神経科学のパイプライン"},
    {"project_name": "🧠🧪"},  # slugifies to nothing: the slug falls back to 'pipeline'
    {"project_name": "2-Photon Lab"},  # a slug starting with a digit: a prefix that does not
    {"project_name": "A " + "very " * 16 + "long lab name"},  # the slug is cut at a word
    {"project_slug": "my.lab", "project_name": "My lab"},
    {"project_slug": "l" * 64},
    {"package_name": "p" + "_x" * 15 + "_"},
    {"github_org": "a-b-c"},
    {"github_org": "L" * 39},
    {"store_location": "lab/raw-2026.v1_a"},
    {"object_store": "s3", "s3_bucket": "lab.data-2026", "s3_endpoint": "https://minio.lab:9000"},
    {"object_store": "none", "store_location": "../ignored"},
    {"database_backend": "postgresql", "schemas": "rank; match <- rank"},
    {"schemas": "matches; case_data <- matches; type_ <- case_data"},
    {"schemas": "trace; spikes <- trace; summary <- spikes, trace"},
    {"schemas": "a" * 30 + "; b <- " + "a" * 30, "schema_prefix": "x_"},
    {"schemas": "x1; x2 <- x1; x3 <- x1; x4 <- x2, x3"},
    {"schemas": "colony"},
    {"schemas": "\n  mouse ;\n\n scan<-mouse;;\n stats <-  scan ,mouse ;\n"},
    {"schemas": {"m": {"description": QUOTES}, "s": {"upstream": ["m"], "role": "analysis"}}},
    {"schemas": {"m": None, "s": "m", "t": ["m", "s"]}},
    {"schemas": "; ".join(["r0", "r1 <- r0", *(f"r{i} <- r{i - 1}, r0" for i in range(2, 40))])},
    {"schema_prefix": ""},
    {"schema_prefix": "p" * 40, "schemas": "abc; de <- abc"},
    {"database_port": "1", "database_host": "db-1.lab_net.example"},
    {
        "database_port": "65535",
        "database_host": "/var/run/postgresql",
        "database_backend": "postgresql",
    },
    {"license": "proprietary", "python_min": "3.13", "audit_trail": "no"},
    {"license": "Apache-2.0", "python_min": "3.11"},
    {"license": "BSD-3-Clause", "python_min": "3.12"},
    {"project_name": "Lab {x} }{ %}"},
    {"description": "Tab-free, with a zero-width joiner 👩‍🔬 and a soft hyphen co\u00adop"},
    longest_answers("mariadb"),  # ruff formats lines of long names as the scaffold writes them
    longest_answers("postgresql"),
    # Names of toolkit modules, free for schemas since the toolkit has a folder of its own.
    {"schemas": "backup; alerts <- backup; utils <- alerts, backup; health <- utils"},
]
DECLARED = {
    2: "mariadb",
    17: "postgresql",
    19: "mariadb",
    25: "postgresql",
    28: "mariadb",
    38: "mariadb",  # schema modules named as toolkit modules
}


def unusual_answers(index: int) -> dict:
    """Each case with its own package and distribution name, so all install side by side."""
    answers = {"package_name": f"ua{index}", **UNUSUAL[index]}
    if "project_slug" not in answers and "project_name" not in answers:
        answers["project_slug"] = f"ua-{index}"
    return answers


@pytest.fixture(scope="module")
def unusual_projects(tmp_path_factory):
    """Every unusual case rendered once, by cookiecutter, with the hooks."""
    from cookiecutter.main import cookiecutter

    out = tmp_path_factory.mktemp("unusual")
    projects = []
    for index in range(len(UNUSUAL)):
        folder = out / str(index)
        path = cookiecutter(
            str(TEMPLATE), no_input=True, extra_context=unusual_answers(index), output_dir=folder
        )
        projects.append(Path(path))
    return projects


def test_unusual_answers_reach_every_file_as_given(unusual_projects):
    import tomllib

    for index, project in enumerate(unusual_projects):
        answers = rendered_context(**unusual_answers(index))[0]
        pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        assert pyproject["project"]["description"] == answers["description"]
        assert pyproject["project"]["authors"] == [
            {"name": answers["author_name"], "email": answers["author_email"]}
        ]
        assert answers["github_org"] in pyproject["project"]["urls"]["Homepage"]
        citation = yaml.safe_load((project / "CITATION.cff").read_text(encoding="utf-8"))
        assert citation["title"] == answers["project_name"]
        assert citation["abstract"] == answers["description"]
        assert citation["authors"][0]["email"] == answers["author_email"]
        compose = yaml.safe_load((project / "docker" / "docker-compose.yaml").read_text())
        if answers["object_store"] == "s3":
            stores = json.loads(compose["services"]["worker"]["environment"]["DJ_STORES"])
            assert stores["main"]["location"] == answers["store_location"]
        settings = json.loads((project / "datajoint.json").read_text(encoding="utf-8"))
        assert settings["database"]["host"] == answers["database_host"]
        assert settings["database"]["port"] == int(answers["database_port"])
        for notebook in (project / "notebooks").glob("*.ipynb"):
            json.loads(notebook.read_text(encoding="utf-8"))


def tool(name: str) -> str:
    """A command of the test environment, on PATH or beside its Python."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def test_unusual_answers_pass_ruff_and_validate_pyproject(unusual_projects):
    result = subprocess.run(
        [tool("validate-pyproject"), *(str(p / "pyproject.toml") for p in unusual_projects)],
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [tool("ruff"), *command, "--no-cache", *map(str, unusual_projects)],
            capture_output=True,
            check=False,
            text=True,
        )
        assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
def test_unusual_projects_install_import_and_declare(unusual_projects, project_env):
    """A handful install (one resolve) and declare; every other one imports beside them."""
    python = str(project_env / "bin" / "python")
    subprocess.run(
        [shutil.which("uv"), "pip", "install", "-q", "--python", python]
        + [arg for index in DECLARED for arg in ("-e", f"{unusual_projects[index]}[dev]")],
        check=True,
    )
    importable = [  # a project may require a newer Python than the one running the tests
        index
        for index, answers in enumerate(UNUSUAL)
        if tuple(map(int, answers.get("python_min", "3.10").split("."))) <= sys.version_info[:2]
    ]
    packages = [unusual_answers(index)["package_name"] for index in importable]
    imports = "; ".join(
        f"import {p}, {p}.__main__, {p}.worker; [importlib.import_module(m.__name__) "
        f"for m in {p}.MODULES]"
        for p in packages
    )
    sources = os.pathsep.join(str(unusual_projects[index] / "src") for index in importable)
    subprocess.run(
        [python, "-c", f"import importlib; {imports}"],
        env=clean_environment(PYTHONPATH=sources),
        check=True,
    )
    for index, backend in DECLARED.items():
        project, package = unusual_projects[index], unusual_answers(index)["package_name"]
        prefix = f"ua_{secrets.token_hex(3)}_"
        env = clean_environment(**BACKENDS[backend], **{f"{package.upper()}_SCHEMA_PREFIX": prefix})
        declared = subprocess.run(
            [python, "-m", package, "declare"],
            cwd=project,
            env=env,
            capture_output=True,
            check=False,
            text=True,
        )
        drop = (
            f"import {package} as p; from {package}.toolkit import promotion; p.activate()\n"
            "for m in reversed(p.MODULES): m.schema.drop(prompt=False)\n"
            "promotion.versions_schema.drop(prompt=False)"
        )
        subprocess.run(
            [python, "-c", drop],
            cwd=project,
            env=env,
            check=False,
        )
        assert declared.returncode == 0, declared.stdout + declared.stderr


@pytest.mark.parametrize("server", list(LONGEST))
def test_the_longest_accepted_names_are_the_longest(pre_gen, server):
    answers = longest_answers(server)
    assert pre_gen.problem("schemas", answers["schemas"], answers) == ""
    _, length, underscored = LONGEST[server]
    for longer in ("s" * length + "z", "u" + underscored):
        assert "; rule schema-length: " in pre_gen.problem("schemas", longer, answers)


@pytest.mark.slow
@pytest.mark.parametrize("server", list(LONGEST))
def test_the_longest_names_declare_and_pass_the_generated_tests(tmp_path, project_env, server):
    """The longest names the hook accepts, in every kind of starter table, declare under the
    development prefix and under the longest prefix the toolkit's tests use (a throwaway
    test_<6 hex>_ with ro<4 hex>_ added), and pass the generated tests (the pipeline's, the
    toolkit's smoke test, the schemas' own) under the tests' throwaway prefixes. Run as the
    server's administrator: the hook leaves room for the default prefixes of the tests
    (test_...), which a lab account's own prefix would lengthen."""
    from cookiecutter.main import cookiecutter

    package = f"longest_{server}"
    answers = {"package_name": package, "project_name": f"Longest {server}"}
    project = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={**answers, **longest_answers(server)},
            output_dir=tmp_path,
        )
    )
    install(project_env, project)
    python = str(project_env / "bin" / "python")
    longest_test_prefix = f"test_{secrets.token_hex(3)}_ro{secrets.token_hex(2)}_"
    assert len(longest_test_prefix) == 19  # the hook's TEST_PREFIX_ROOM
    for prefix in (None, longest_test_prefix):
        variable = {f"{package.upper()}_SCHEMA_PREFIX": prefix} if prefix else {}
        env = clean_environment(**BACKENDS[server], **variable)
        try:
            declared = subprocess.run([python, "-m", package, "declare"], cwd=project, env=env,
                                      capture_output=True, check=False, text=True)  # fmt: skip
            assert declared.returncode == 0, declared.stdout[-2000:] + declared.stderr[-3000:]
        finally:
            subprocess.run([python, "-m", package, "reset", "--yes"], cwd=project, env=env,
                           capture_output=True, check=False)  # fmt: skip
    names = module_order(project, package)
    suite = ["pipeline", "toolkit", *names]
    result = run_project_tests(project_env, project, server, *(f"tests/test_{n}.py" for n in suite))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
