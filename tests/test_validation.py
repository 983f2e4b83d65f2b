"""Every rule of the README's table is enforced, exactly as documented.

The table in README.md (between the rules markers) is the source of these tests:
each row's requirement must be the rule's text in the hook, and each row's example
must be refused by that rule, both by the hook's functions and by a real
cookiecutter run that leaves nothing behind.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE, module_order
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
    """The answers of an example such as `object_store=s3 s3_bucket=X`."""
    result: dict[str, object] = {}
    for word in shlex.split(example):
        key, _, value = word.partition("=")
        result[key] = yaml.safe_load(value) if value.startswith("{") else value
    return result


def rendered_context(**extra: object) -> dict:
    """The context cookiecutter would render with --no-input and these answers."""
    context = generate_context(context_file=TEMPLATE / "cookiecutter.json", extra_context=extra)
    return prompt_for_config(context, no_input=True)


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
        pre_gen.validate(rendered_context(**answers(example)))
    assert caught.value.rule == rule
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(f"rule {rule}: {pre_gen.RULES[rule]}")


@pytest.mark.parametrize(
    ("rule", "requirement", "example"), RULE_ROWS, ids=[row[0] for row in RULE_ROWS]
)
def test_cookiecutter_stops_with_one_line_and_writes_nothing(tmp_path, rule, requirement, example):
    args = [
        f"{key}={value}" for key, value in answers(example).items() if not isinstance(value, dict)
    ]
    if len(args) < len(answers(example)):
        pytest.skip("a mapping cannot be given on the command line (covered above)")
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
    ("schema-length", {"schemas": "c" * 40, "schema_prefix": "a_rather_long_project_prefix_"}),
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
        pre_gen.validate(rendered_context(**extra))
    assert caught.value.rule in {rule, "spec-syntax"}
    assert "\n" not in str(caught.value)


ACCEPTED = [
    {"schemas": "match; type <- match", "database_backend": "postgresql"},  # soft keywords
    {"schemas": "a" * 44},
    {"schemas": "select_data", "database_backend": "postgresql"},
    {"schemas": "user", "database_backend": "mysql"},  # reserved in PostgreSQL only
    {"schema_prefix": ""},
    {"database_host": "/var/run/postgresql"},
    {"object_store": "s3", "s3_endpoint": "https://s3.eu-west-1.amazonaws.com"},
    {"object_store": "s3", "s3_endpoint": "minio:9000", "s3_bucket": "lab.data-2026"},
    {"object_store": "none", "store_location": "../ignored/without/a/store"},
    {"project_name": 'José Müller\'s "Lab" \\o/ {x}'},
]


@pytest.mark.parametrize("extra", ACCEPTED, ids=[str(e) for e in ACCEPTED])
def test_unusual_but_valid_answers_are_accepted(pre_gen, extra):
    assert pre_gen.validate(rendered_context(**extra))


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
    init = (tmp_path / "my-pipeline" / "src" / "workflow" / "pipeline" / "__init__.py").read_text()
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
