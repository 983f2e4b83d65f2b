"""Check every answer before cookiecutter writes a file, and plan the pipeline.

Cookiecutter renders this script with Jinja before running it. Only
RENDERED_CONTEXT is filled in that way, so the module imports as plain Python
and its functions are unit-tested directly (tests/test_pipeline_spec.py).

The schema graph lives here, once: `parse_spec` reads the compact text form or
the structured (YAML) form, `validate_pipeline` applies the rules, and
`dependency_order` sorts it. On success the ordered plan is written to
PLAN_FILE for post_gen_project, which writes one module per schema from it.
On failure the user sees one line naming the value and the rule, and
cookiecutter removes the half-made project directory.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from dataclasses import asdict, dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

RENDERED_CONTEXT = r"""{{ cookiecutter | tojson }}"""
PLAN_FILE = ".pipeline-plan.json"

ROLES = ("acquisition", "processing", "analysis")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*\Z")
# Modules the generated package has besides the schema modules.
PACKAGE_MODULES = frozenset({"cli", "sample_data", "scaffold", "utils", "version", "worker"})


class InputError(ValueError):
    """An answer that breaks a rule; the message is the one line the user sees."""


@dataclass(frozen=True)
class Schema:
    """One schema of the pipeline: its name, upstream schemas and documentation."""

    name: str
    upstream: tuple[str, ...] = ()
    description: str = ""
    role: str = ""


# --- the schema spec -------------------------------------------------------


def parse_spec(spec: object) -> list[Schema]:
    """Read the spec in either form: compact text, or a mapping from YAML."""
    if isinstance(spec, dict):
        return parse_mapping(spec)
    if isinstance(spec, str):
        return parse_text(spec)
    raise InputError(f"schemas: {spec!r} is neither text nor a mapping of schema names")


def parse_text(text: str) -> list[Schema]:
    """Parse 'a; b <- a; c <- a, b' (';' or line breaks between entries)."""
    schemas = []
    entries = re.split(r"[;\n]", text)
    for number, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if not entry:
            continue  # blank lines and trailing separators are fine
        name, arrow, upstream = entry.partition("<-")
        name = name.strip()
        if not name:
            raise InputError(f"schemas: entry {number} {entry!r} has no schema name before '<-'")
        if re.search(r"\s", name) or "," in name:
            raise InputError(
                f"schemas: entry {number} {entry!r} must be one schema name, "
                "optionally followed by '<-' and its upstream schemas"
            )
        parents = tuple(part.strip() for part in upstream.split(",")) if arrow else ()
        if arrow and not any(parents):
            raise InputError(
                f"schemas: entry {number} {entry!r} lists no upstream schema after '<-'"
            )
        if "" in parents:
            raise InputError(
                f"schemas: entry {number} {entry!r} has an empty name in its upstream list"
            )
        for parent in parents:
            if re.search(r"\s", parent):
                raise InputError(
                    f"schemas: entry {number} {entry!r} has an invalid upstream {parent!r}; "
                    "separate upstream schemas with commas"
                )
        schemas.append(Schema(name, parents))
    return schemas


def parse_mapping(mapping: dict) -> list[Schema]:
    """Parse {name: None | "up" | [ups] | {upstream:, description:, role:}}."""
    schemas = []
    for name, value in mapping.items():
        if value is None or isinstance(value, (str, list)):
            value = {"upstream": value}
        if not isinstance(value, dict):
            raise InputError(
                f"schemas: entry {name!r} must be a list of upstream schemas or a mapping"
            )
        unknown = set(value) - {"upstream", "description", "role"}
        if unknown:
            raise InputError(
                f"schemas: entry {name!r} has unknown key(s) {', '.join(sorted(unknown))}; "
                "allowed: upstream, description, role"
            )
        upstream = value.get("upstream") or []
        if isinstance(upstream, str):
            upstream = [part.strip() for part in upstream.split(",")]
        description = value.get("description") or ""
        if not isinstance(description, str) or "\n" in description.strip():
            raise InputError(f"schemas: description of {name!r} must be one line of text")
        schemas.append(
            Schema(
                str(name),
                tuple(str(u) for u in upstream),
                description.strip(),
                value.get("role") or "",
            )
        )
    return schemas


def check_schema_name(name: str) -> None:
    """A schema name becomes a module name and part of a database schema name."""
    if not IDENTIFIER.match(name):
        raise InputError(
            f"schemas: {name!r} is not a valid schema name; use lowercase letters, digits "
            f"and underscores, starting with a letter (e.g. {suggest_name(name)!r})"
        )
    if keyword.iskeyword(name):
        raise InputError(f"schemas: {name!r} is a Python keyword and cannot name a module")
    if name in PACKAGE_MODULES:
        raise InputError(
            f"schemas: {name!r} is taken by the package's own module; "
            f"reserved: {', '.join(sorted(PACKAGE_MODULES))}"
        )


def suggest_name(name: str) -> str:
    """The nearest valid identifier, to show with an error."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "s_" + cleaned
    return cleaned


def validate_pipeline(schemas: list[Schema]) -> None:
    """Names, duplicates, unknown or self references, and cycles."""
    if not schemas:
        raise InputError("schemas: the pipeline is empty; name at least one schema")
    seen: set[str] = set()
    for schema in schemas:
        check_schema_name(schema.name)
        if schema.name in seen:
            raise InputError(f"schemas: {schema.name!r} is listed twice; list each schema once")
        seen.add(schema.name)
        if schema.role and schema.role not in ROLES:
            raise InputError(
                f"schemas: role {schema.role!r} of {schema.name!r} is not one of {', '.join(ROLES)}"
            )
    for schema in schemas:
        for parent in schema.upstream:
            if parent == schema.name:
                raise InputError(
                    f"schemas: {schema.name!r} lists itself as upstream; a schema cannot depend on itself"
                )
            if parent not in seen:
                raise InputError(
                    f"schemas: {schema.name!r} depends on unknown schema {parent!r}; "
                    f"known: {', '.join(sorted(seen))}"
                )
        if len(set(schema.upstream)) != len(schema.upstream):
            raise InputError(f"schemas: {schema.name!r} lists an upstream schema twice")
    dependency_order(schemas)


def dependency_order(schemas: list[Schema]) -> list[Schema]:
    """Upstream before downstream; ties keep the order the user wrote."""
    position = {schema.name: index for index, schema in enumerate(schemas)}
    sorter = TopologicalSorter({schema.name: schema.upstream for schema in schemas})
    try:
        sorter.prepare()
    except CycleError as error:
        cycle = error.args[1]  # graphlib lists it upstream first, ending where it began
        raise InputError(
            f"schemas: dependency cycle {' -> '.join(cycle)}; a pipeline must be acyclic"
        ) from None
    ordered = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        ordered.extend(ready)
        sorter.done(*ready)
    by_name = {schema.name: schema for schema in schemas}
    return [by_name[name] for name in ordered]


def with_default_roles(schemas: list[Schema]) -> list[Schema]:
    """Roots acquire data, sinks analyse it, everything between processes it."""
    has_downstream = {parent for schema in schemas for parent in schema.upstream}
    result = []
    for schema in schemas:
        role = schema.role or (
            "acquisition"
            if not schema.upstream
            else "processing"
            if schema.name in has_downstream
            else "analysis"
        )
        result.append(Schema(schema.name, schema.upstream, schema.description, role))
    return result


def plan_pipeline(spec: object) -> list[Schema]:
    """Parse, validate and order the spec: the plan post_gen_project writes out."""
    schemas = parse_spec(spec)
    validate_pipeline(schemas)
    return with_default_roles(dependency_order(schemas))


# --- the other answers -------------------------------------------------------

CHOICES = {
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "proprietary"),
    "python_min": ("3.10", "3.11", "3.12", "3.13"),
    "database_backend": ("mysql", "postgresql"),
    "object_store": ("file", "s3", "none"),
}
# Importing the package must not shadow what it depends on.
DEPENDENCIES = frozenset(
    {"datajoint", "numpy", "pandas", "pymysql", "psycopg2", "pytest", "s3fs", "pydantic"}
)


def check_answers(context: dict) -> None:
    """Everything besides the schema spec."""
    for field, allowed in CHOICES.items():
        if context[field] not in allowed:
            raise InputError(f"{field}: {context[field]!r} is not one of {', '.join(allowed)}")
    package = context["package_name"]
    if not IDENTIFIER.match(package) or keyword.iskeyword(package):
        raise InputError(
            f"package_name: {package!r} is not importable; use lowercase letters, digits and "
            f"underscores, starting with a letter (e.g. {suggest_name(package)!r})"
        )
    if package in DEPENDENCIES or package in sys.stdlib_module_names:
        raise InputError(
            f"package_name: {package!r} would shadow the installed package of that name; choose another"
        )
    if not context["project_name"].strip():
        raise InputError("project_name: the project name is empty")
    slug = context["project_slug"]
    if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", slug):
        raise InputError(
            f"project_slug: {slug!r} is not a valid distribution name; use lowercase letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    prefix = context["schema_prefix"]
    if not re.fullmatch(r"([a-z][a-z0-9_]*)?", prefix):
        raise InputError(
            f"schema_prefix: {prefix!r} must be lowercase letters, digits and underscores, starting with a letter"
        )
    port = str(context["database_port"])
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise InputError(f"database_port: {port!r} is not a port number from 1 to 65535")
    host = context["database_host"]
    if not host or re.search(r"[\s/]", host):
        raise InputError(
            f"database_host: {host!r} must be a host name or address without spaces or slashes"
        )
    email = context["author_email"]
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise InputError(f"author_email: {email!r} is not an e-mail address (name@domain)")


def main() -> int:
    context = json.loads(RENDERED_CONTEXT)
    try:
        check_answers(context)
        plan = plan_pipeline(context["schemas"])
    except InputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    Path(PLAN_FILE).write_text(
        json.dumps([asdict(schema) for schema in plan], indent=2), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
