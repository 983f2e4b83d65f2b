"""Check every answer before cookiecutter writes a file, and plan the pipeline.

Cookiecutter renders this script with Jinja before running it. Only
RENDERED_CONTEXT and GIVEN_ANSWERS are filled in that way, so the module imports
as plain Python and its functions are unit-tested directly
(tests/test_pipeline_spec.py, tests/test_validation.py).

Every rule has an id and a text in RULES, and is a small function of
(value, context) returning what is wrong, or "" (CHECKS); FIELD_RULES says which
rules apply to which answer. `problem(field, value, context)` gives the one line
a user sees, for this hook or any other front end. The README's table of rules
lists the same ids with an example each, and the tests check every example.

The schema graph lives here, once: `parse_spec` reads the compact text form, a
list of its entries, the structured (YAML) form or a YAML file;
`validate_pipeline` applies the rules and `dependency_order` sorts it. On
success the ordered plan is written to PLAN_FILE for post_gen_project, which
writes one module per schema from it. Everything post_gen_project and the
templates rely on is checked here, before cookiecutter writes any file: on
failure cookiecutter removes the project directory it created, and an existing
one (--overwrite-if-exists) is left exactly as it was.

Names the generated code already uses are read from the template itself when
the hook runs (its package and test files, the modules its scaffold writes, its
pyproject's dependencies), together with Python's builtins and standard library.
"""

from __future__ import annotations

import ast
import builtins
import functools
import ipaddress
import json
import keyword
import os
import re
import stat
import sys
import tempfile
import types
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

RENDERED_CONTEXT = r"""{{ cookiecutter | tojson }}"""
# The answers as given, before cookiecutter rendered them (it keeps only the first item of a list).
GIVEN_ANSWERS = r"""{{ _cookiecutter | default({}) | tojson }}"""
PLAN_FILE = ".pipeline-plan.json"

TEXT_LIMIT = 256
NAME_LIMIT = 64
PACKAGE_LIMIT = 32  # longer names push generated lines over ruff's 100 columns
PREFIX_LIMIT = 40
SPEC_FILE_LIMIT = 256 * 1024
SPEC_DEPTH_LIMIT = 10
SCHEMA_COUNT_LIMIT = 1000

RULES = {
    "answer-text": "a text answer, not null, a boolean, a list, a mapping or a decimal number "
    "(quote such values in a config file)",
    "text": f"printable text of at most {TEXT_LIMIT} characters: no control characters "
    "(NUL, tab, line breaks), unpaired surrogates or bidirectional overrides",
    "schema-name": "lowercase ASCII letters, digits and underscores, starting with a letter",
    "schema-keyword": "not a Python keyword: the name becomes a module",
    "schema-sql": "not an SQL reserved word of the chosen database backend",
    "schema-module": "not the name of one of the package's own modules or test files",
    "schema-shadow": "not a name the generated code already uses, a module the project or its "
    "tests import, or a Python builtin",
    "schema-length": "fits the backend's identifier limit (MySQL 64, PostgreSQL 63 characters) "
    "after the production prefix with 8 characters to spare for a development prefix, and after "
    "the 19-character prefixes of the project's tests; on MySQL each '_' counts twice (its "
    "grants escape it)",  # the toolkit's scaffold.length_problem() applies it
    "spec-syntax": "entries 'name' or 'name <- upstream, ...' (optionally 'name [role] <- ...') "
    "separated by ';' or line breaks (or given as a list), or a mapping of names",
    "spec-file": f"a spec given as a path names a regular UTF-8 YAML file of at most "
    f"{SPEC_FILE_LIMIT // 1024} KB, without anchors or aliases, holding the mapping or the text",
    "spec-empty": "at least one schema",
    "spec-size": f"at most {SCHEMA_COUNT_LIMIT} schemas",
    "spec-duplicate": "each schema listed once",
    "spec-self": "no schema depends on itself",
    "spec-unknown": "every upstream schema is itself listed",
    "spec-cycle": "no dependency cycles",
    "spec-role": "a role is acquisition, processing or analysis",
    "project-name": "not empty, at most 100 characters",
    "visible": "at least one visible character: a letter, digit, punctuation mark or symbol, "
    "not only spaces, marks or invisible characters such as U+200B or U+2800",
    "project-slug": "lowercase letters, digits, '-', '_' and '.', starting and ending with a letter "
    f"or digit, at most {NAME_LIMIT} characters",
    "package-name": "an importable name: lowercase letters, digits and underscores, starting with "
    f"a letter, not a Python keyword, at most {PACKAGE_LIMIT} characters",
    "package-shadow": "not the name of a standard-library module, a Python builtin, a package "
    "the project or its tools import, or a test file or folder of the project",
    "schema-prefix": "empty, or lowercase letters, digits and underscores starting with a letter, "
    f"at most {PREFIX_LIMIT} characters",
    "choice": "one of the listed choices",
    "port": "a whole number from 1 to 65535 in ASCII digits, without leading zeros",
    "host-url": "the host alone: not a URL, and no port or path after it (the port is "
    "database_port)",
    "host": "a host name or IPv4 address of ASCII letters, digits, '.', '-' and '_', or with "
    "PostgreSQL a socket directory (an absolute path); DataJoint 2.3.5 reads any ':' as the start "
    "of a port, so no IPv6 address",
    "email": "an e-mail address name@domain: the name of ASCII letters, digits and symbols "
    "such as + - _ ' with single dots between; the domain of letters, digits and hyphens with "
    "dots between, ending in two letters or more",
    "github-org": "a GitHub user or organisation: ASCII letters, digits and single hyphens, not "
    "starting or ending with '-', at most 39 characters",
    "s3-bucket": "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting and "
    "ending with a letter or digit, not an IP address",
    "s3-endpoint": "host[:port] or an http(s) URL",
    "store-location": "a relative path inside the store: names of ASCII letters, digits, '.', "
    "'_' and '-' separated by '/', no '..'",
}

ROLES = ("acquisition", "processing", "analysis")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*\Z")
CHOICES = {
    # One text per license in templates/licenses/<name>.txt: add both to offer another.
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "GPL-3.0-or-later", "proprietary"),
    "python_min": ("3.10", "3.11", "3.12", "3.13"),
    "database_backend": ("mysql", "postgresql"),
    "object_store": ("file", "s3", "none"),
    "audit_trail": ("yes", "no"),
}
# DataJoint 2.3.5's Requires-Dist, with its postgres and s3 extras, as import names: the
# project imports them through DataJoint, so a package of the same name would shadow them.
DATAJOINT_IMPORTS = frozenset(
    "deepdiff fsspec networkx numpy packaging pandas pydantic pydantic_settings pydot pymysql "
    "pyparsing tqdm psycopg2 s3fs".split()
)
# Characters that break the one-line files answers are written to, or read as other text.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Letters and symbols that show nothing: the Hangul fillers (default-ignorable code points)
# and the blank braille pattern. Other invisible characters are spaces, marks or formats.
BLANK_GRAPHICS = frozenset("\u115f\u1160\u3164\uffa0\u2800")

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

    def __init__(self, rule: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.rule = rule
        self.field = field  # the question whose answer broke the rule


def refuse(rule: str, field: str, problem: str, hint: str = "") -> InputError:
    """The error for a broken rule: what is wrong, a hint if one helps, and the rule."""
    return InputError(rule, f"{field}: {problem}{hint}; rule {rule}: {RULES[rule]}", field)


def shown(value: object, limit: int = 60) -> str:
    """A value as the messages show it: its repr (one line, escapes visible), shortened."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 10]}...{text[-4:]}{size}"


# --- names the generated project already uses ---------------------------------
#
# Read from the template when the hook runs, so they follow the template's code.

# A pipeline of every shape the scaffold writes (root, imported, computed of one and of
# several inputs), named so that none of its own names is mistaken for the scaffold's.
PROBE_PLAN = [
    {"name": "zzq", "upstream": [], "description": "", "role": "acquisition"},
    {"name": "zzr", "upstream": ["zzq"], "description": "", "role": "processing"},
    {"name": "zzs", "upstream": ["zzr"], "description": "", "role": "processing"},
    {"name": "zzt", "upstream": ["zzs", "zzr"], "description": "", "role": "analysis"},
]


@dataclass(frozen=True)
class TemplateNames:
    modules: frozenset[str] = frozenset()  # the package's modules besides the schema modules
    tests: frozenset[str] = frozenset()  # module names of the project's test files
    folders: frozenset[str] = frozenset()  # the project's top-level folders
    code: frozenset[str] = frozenset()  # names bound or used where schema modules are imported
    imports: frozenset[str] = frozenset()  # top-level modules the project imports or depends on


def template_dir(context: dict) -> Path | None:
    """The template: cookiecutter's repository directory; else (cruft gives none) the
    directory cookiecutter runs the hooks from, its process's working directory on Linux;
    else this file's (unit tests)."""
    candidates = (
        context.get("_repo_dir"),
        f"/proc/{os.getppid()}/cwd",
        Path(__file__).resolve().parents[1],
    )
    for candidate in candidates:
        if candidate and (Path(candidate) / "cookiecutter.json").is_file():
            return Path(candidate).resolve()
    return None


def names_in(tree: ast.AST) -> set[str]:
    """Every name a module binds or reads: imports, definitions, arguments, variables."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
    return names


def load_template_scaffold(scaffold: Path) -> types.ModuleType:
    """The template's scaffold.py (plain Python, in the toolkit) as a module."""
    source = scaffold.read_text(encoding="utf-8")
    module = types.ModuleType("template_scaffold")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    code = compile(source, str(scaffold), "exec")
    exec(code, vars(module))  # noqa: S102 - the template's own module writer
    return module


@functools.cache
def template_scaffold(template: Path | None) -> types.ModuleType | None:
    """The template's scaffold (its rules for schema names), if the template is found."""
    if template is None:
        return None
    (scaffold,) = template.glob("*cookiecutter.project_slug*/src/*/toolkit/scaffold.py")
    return load_template_scaffold(scaffold)


def probe_scaffold(scaffold: Path) -> tuple[set[str], set[str]]:
    """Run the template's scaffold on PROBE_PLAN: (modules it writes besides the schema
    modules, with the names its RESERVED keeps for the package (add-schema refuses the
    same ones); every name used in the files it writes)."""
    module = load_template_scaffold(scaffold)
    probe = {schema["name"] for schema in PROBE_PLAN}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "src" / "zzpkg").mkdir(parents=True)
        (root / "tests").mkdir()
        module.write_pipeline(
            root,
            "zzpkg",
            PROBE_PLAN,
            blob="<blob@main>",
            name="zz",
            production_prefix="zz_",
            settings_prefix="ZZPKG",
        )
        written = {path.stem for path in (root / "src" / "zzpkg").glob("*.py")} - probe
        written |= {path.stem for path in (root / "tests").glob("*.py")} - {
            f"test_{name}" for name in probe
        }
        written |= set(module.RESERVED)
        code = set()
        for path in root.rglob("*.py"):
            code |= names_in(ast.parse(path.read_text(encoding="utf-8")))
    return written, {name for name in code if "zz" not in name.lower()}


def import_name(requirement: str) -> str:
    """The module a distribution is imported as, by convention: python-dotenv -> dotenv."""
    name = re.sub(r"[-.]+", "_", requirement.lower())
    return name.removeprefix("python_")


def dependency_imports(pyproject: str) -> set[str]:
    """Import names of the dependencies and optional dependencies in a pyproject.toml."""
    names, table, in_dependencies = set(), "", False
    for line in pyproject.splitlines():
        header = re.match(r"\[([^\]]+)\]\s*$", line)
        if header:
            table = header[1]
        elif re.match(r"[\w-]+ = \[", line):
            in_dependencies = table == "project.optional-dependencies" or (
                table == "project" and line.startswith("dependencies ")
            )
        elif line.startswith("]"):
            in_dependencies = False
        elif in_dependencies and (item := re.match(r'\s*"([A-Za-z0-9][\w.-]*)', line)):
            names.add(import_name(item[1]))
    return names


def imported_modules(source: str) -> set[str]:
    """Top-level modules a Python source (or a Jinja template of one) imports."""
    pattern = r"^[ \t]*(?:import[ \t]+([A-Za-z_]\w*)|from[ \t]+([A-Za-z_]\w*)[\w.]*[ \t]+import\b)"
    return {a or b for a, b in re.findall(pattern, source, flags=re.MULTILINE)}


@functools.cache
def template_names(template: Path | None) -> TemplateNames:
    """What the template's project holds and uses; nothing if the template is not found."""
    if template is None:
        return TemplateNames()
    project = next(template.glob("*cookiecutter.project_slug*"))
    package = next(path for path in (project / "src").iterdir() if path.is_dir())
    written, code = probe_scaffold(package / "toolkit" / "scaffold.py")
    sources = [path.read_text(encoding="utf-8") for path in project.rglob("*.py")]
    test_modules = {
        match[1]
        for path in (project / "tests").iterdir()
        if (match := re.search(r"(\w+)\.py\b", path.name))
    }
    return TemplateNames(
        # The package's modules and folders (the toolkit) besides the schema modules.
        modules=frozenset(
            {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
            | {path.name for path in package.iterdir() if path.is_dir()}
            | written
        ),
        tests=frozenset(test_modules),
        folders=frozenset(path.name for path in project.iterdir() if path.is_dir()),
        code=frozenset(code),
        imports=frozenset(
            set().union(*map(imported_modules, sources))
            | dependency_imports((project / "pyproject.toml").read_text(encoding="utf-8"))
            | DATAJOINT_IMPORTS
        ),
    )


def project_names(context: dict) -> TemplateNames:
    return template_names(template_dir(context))


# --- rules: each a function of (value, context) returning what is wrong, or "" ---


def answer_text(value: object, context: dict) -> str:
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return f"{value} is a boolean (YAML reads unquoted yes, no, on, off, true, false so)"
    if value is None:
        return "null is not text (an empty value in a config file is null)"
    if isinstance(value, list):
        return f"the list {shown(value)} is not one answer (cookiecutter keeps only its first item)"
    if isinstance(value, float):
        return f"the number {value!r} is not text (YAML reads 3.10 as 3.1)"
    return f"{shown(value)} is not text"


def printable_text(value: str, context: dict) -> str:
    for character in value:
        if (
            unicodedata.category(character) in ("Cc", "Cs", "Zl", "Zp")
            or character in BIDI_CONTROLS
            or character in "\ufffe\uffff"
        ):
            return f"{shown(value)} holds the character U+{ord(character):04X}"
    if len(value) > TEXT_LIMIT:
        return f"{shown(value)} is too long"
    return ""


def project_name(value: str, context: dict) -> str:
    if not value.strip():
        return "the project name is empty"
    if len(value) > 100:
        return f"{shown(value)} is too long"
    return ""


def project_slug(value: str, context: dict) -> str:
    if len(value) > NAME_LIMIT or not re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", value):
        return f"{shown(value)} is not a valid distribution name"
    return ""


def package_name(value: str, context: dict) -> str:
    if len(value) > PACKAGE_LIMIT or not IDENTIFIER.match(value) or keyword.iskeyword(value):
        return f"{shown(value)} is not importable (e.g. {suggest_name(value)[:PACKAGE_LIMIT]!r})"
    return ""


def package_shadow(value: str, context: dict) -> str:
    names = project_names(context)
    reason = (
        "a standard-library module"
        if value in sys.stdlib_module_names
        else "a Python builtin"
        if value in dir(builtins)
        else "imported by the project or its tools"
        if value in names.imports
        else "a test module or a folder of the project"
        if value in names.tests | names.folders
        else ""
    )
    return f"{value!r} is {reason}: the package would hide it or be hidden" if reason else ""


def schema_prefix(value: str, context: dict) -> str:
    if len(value) > PREFIX_LIMIT or not re.fullmatch(r"([a-z][a-z0-9_]*)?", value):
        return f"{shown(value)} is not a valid prefix"
    return ""


def one_of(options: tuple[str, ...]) -> Callable[[str, dict], str]:
    """The rule of an answer that must be one of `options`.

    cookiecutter.json asks these as plain text, not as cookiecutter choice lists: a bad
    choice on the command line would stop cookiecutter with a traceback of its own, and
    one in a config file would be dropped silently, with the rest of that file.
    """

    def choice(value: str, context: dict) -> str:
        return "" if value in options else f"{shown(value)} is not allowed: {', '.join(options)}"

    return choice


def port(value: str, context: dict) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,4}", value) or int(value) > 65535:
        return f"{shown(value)} is not a port number"
    return ""


def host_url(value: str, context: dict) -> str:
    """A URL, host:port or host/path: name the host alone, the port apart."""
    if "://" in value:
        url = re.fullmatch(r"[A-Za-z][\w+.-]*://(?:[^@/]*@)?([^/:]*)(?::([0-9]*))?(/.*)?", value)
        kind = "a URL"
    else:
        url = re.fullmatch(r"([^/:]*)(?::([0-9]*))?(/.*)?", value)
        if value.startswith("/") or not url or not (url[2] or url[3]):
            return ""  # a socket directory, or no more than a host: the host rule checks it
        kind = "more than a host"
    if not url or not re.fullmatch(r"[A-Za-z0-9._-]+", url[1]):
        return f"{shown(value)} is {kind}, not a host"
    port = f", and database_port={url[2]}" if url[2] else ""
    return f"{shown(value)} is {kind}; give the host name alone: {url[1]}{port}"


def host(value: str, context: dict) -> str:
    if re.fullmatch(r"[A-Za-z0-9._-]+", value):
        return ""
    if re.fullmatch(r"/[A-Za-z0-9._/-]*", value):
        if context.get("database_backend") == "postgresql":
            return ""
        return f"{shown(value)} is a socket directory: DataJoint 2.3.5 reaches those on PostgreSQL"
    if ":" in value:
        return f"{shown(value)} holds a ':'; give a host name or IPv4 address"
    return f"{shown(value)} is not a host"


def visible(value: str, context: dict) -> str:
    """Some character a reader sees: a letter, digit, punctuation mark or symbol."""
    if any(
        unicodedata.category(character)[0] in "LNPS" and character not in BLANK_GRAPHICS
        for character in value
    ):
        return ""
    points = sorted({f"U+{ord(character):04X}" for character in value})
    listed = f" (only {', '.join(points[:5])}{' ...' if len(points) > 5 else ''})" if points else ""
    return f"{shown(value)} has no visible character{listed}"


def email(value: str, context: dict) -> str:
    atom = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    label = r"[^\W_](?:[\w-]*[^\W_])?"
    if not re.fullmatch(rf"{atom}(?:\.{atom})*@(?:{label}\.)+[^\W\d_][^\W\d_]+", value):
        return f"{shown(value)} is not an e-mail address"
    return ""


def github_org(value: str, context: dict) -> str:
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}", value):
        return f"{shown(value)} is not a GitHub user or organisation name"
    return ""


def store_location(value: str, context: dict) -> str:
    if context.get("object_store") == "none":
        return ""
    parts = value.split("/")
    if not value or "" in parts or ".." in parts:
        return f"{shown(value)} leaves the store or is empty"
    if not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in parts):
        return f"{shown(value)} holds other characters"
    return ""


def s3_bucket(value: str, context: dict) -> str:
    if context.get("object_store") != "s3" or is_s3_bucket_name(value):
        return ""
    return f"{shown(value)} is refused by S3 (e.g. {s3_bucket_hint(value)!r})"


def s3_endpoint(value: str, context: dict) -> str:
    if context.get("object_store") != "s3" or is_endpoint(value):
        return ""
    return f"{shown(value)} is not an endpoint"


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
        r"(?:https?://)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::([0-9]{1,5}))?/?", endpoint
    )
    if not match:
        return False
    host, port = match.groups()
    labels = host.split(".")
    return (
        host.startswith("[")
        or all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", x) for x in labels)
    ) and (port is None or 1 <= int(port) <= 65535)


@dataclass(frozen=True)
class Schema:
    """One schema of the pipeline: its name, upstream schemas and documentation."""

    name: str
    upstream: tuple[str, ...] = ()
    description: str = ""
    role: str = ""


# --- the schema spec -------------------------------------------------------


def is_path(spec: str) -> bool:
    """A spec naming a file: one word ending in .yaml or .yml, or holding a '/'."""
    text = spec.strip()
    if re.search(r"[;\n]|<-", text):
        return False
    return bool(re.fullmatch(r".+\.ya?ml", text) or "/" in text or text.startswith("~"))


def parse_spec(spec: object, spec_dirs: tuple[str, ...] = ()) -> list[Schema]:
    """Read the spec in any form: compact text, a list of its entries, a mapping, or a
    path to a YAML file holding one of them.

    A relative path is looked up in `spec_dirs`: where cookiecutter was started.
    """
    if isinstance(spec, list):  # from a config file: one entry per item
        for entry in spec:
            if not isinstance(entry, str):
                raise refuse("spec-syntax", "schemas", f"the list item {shown(entry)} is not text")
        spec = "\n".join(spec)
    if isinstance(spec, str) and is_path(spec):
        spec = read_spec_file(spec.strip(), spec_dirs)
    if isinstance(spec, dict):
        return parse_mapping(spec)
    if isinstance(spec, str):
        return parse_text(spec)
    raise refuse("spec-syntax", "schemas", f"{shown(spec)} is neither text nor a mapping")


FILE_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a device",
    stat.S_ISBLK: "a device",
    stat.S_ISSOCK: "a socket",
}


def read_bounded(path: Path, name: str) -> bytes:
    """The bytes of a regular file of at most SPEC_FILE_LIMIT bytes; never blocks."""

    def check(mode: int, size: int) -> None:
        if not stat.S_ISREG(mode):
            kind = next((kind for test, kind in FILE_KINDS.items() if test(mode)), "special")
            raise refuse("spec-file", "schemas", f"{name!r} is {kind}, not a regular file")
        if size > SPEC_FILE_LIMIT:
            raise refuse("spec-file", "schemas", f"{name!r} has {size} bytes")

    try:
        info = os.stat(path)
        check(info.st_mode, info.st_size)
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as file:
            info = os.fstat(file.fileno())  # the file opened, should it have been replaced
            check(info.st_mode, info.st_size)
            data = file.read(SPEC_FILE_LIMIT + 1)
    except OSError as error:
        raise refuse("spec-file", "schemas", f"cannot read {name!r} ({error.strerror})") from None
    check(stat.S_IFREG, len(data))
    return data


def load_yaml(text: str, name: str) -> object:
    """YAML safely loaded, refusing anchors and aliases (no "billion laughs") and deep nesting."""
    import yaml  # cookiecutter depends on PyYAML

    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise refuse("spec-file", "schemas", f"{name!r} uses YAML anchors or aliases")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > SPEC_DEPTH_LIMIT:
                    raise refuse("spec-file", "schemas", f"{name!r} is nested too deeply")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise refuse("spec-file", "schemas", f"{name!r} is not valid YAML{line}") from None


def read_spec_file(name: str, spec_dirs: tuple[str, ...]) -> object:
    """Load a YAML spec file: the mapping, or the text form."""
    path = Path(name).expanduser()
    candidates = [Path(folder) / path for folder in spec_dirs if folder and not path.is_absolute()]
    path = next((candidate for candidate in candidates if candidate.exists()), path)
    try:
        text = read_bounded(path, name).decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("spec-file", "schemas", f"{name!r} is not UTF-8 text") from None
    content = load_yaml(text, name)
    if isinstance(content, dict) and set(content) == {"schemas"}:
        content = content["schemas"]
    if not isinstance(content, (dict, str)):
        raise refuse("spec-file", "schemas", f"{name!r} holds neither a mapping nor text")
    return content


def check_count(count: int) -> None:
    """Refuse a pipeline too large to write, before reading its entries."""
    if count > SCHEMA_COUNT_LIMIT:
        raise refuse("spec-size", "schemas", f"the pipeline has {count} schemas")


def parse_text(text: str) -> list[Schema]:
    """Parse 'a; b <- a; c <- a, b' (';' or line breaks between entries)."""
    entries = re.split(r"[;\n]", text)
    check_count(sum(1 for entry in entries if entry.strip()))
    schemas = []
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry:
            continue  # blank lines and trailing separators are fine
        where = f"entry {number} {shown(entry)}"
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
                    f"{where} has an invalid upstream {shown(parent)}",
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
    check_count(len(mapping))
    schemas = []
    for name, value in mapping.items():
        if value is None or isinstance(value, (str, list)):
            value = {"upstream": value}
        if not isinstance(value, dict):
            raise refuse(
                "spec-syntax",
                "schemas",
                f"entry {shown(name)} is {shown(value)}",
                " (a list of upstream schemas)",
            )
        unknown = set(value) - {"upstream", "description", "role"}
        if unknown:
            raise refuse(
                "spec-syntax",
                "schemas",
                f"entry {shown(name)} has unknown key(s) {shown(sorted(map(str, unknown)))}",
                "; allowed keys: upstream, description, role",
            )
        upstream = value.get("upstream") or []
        if isinstance(upstream, str):
            upstream = [part.strip() for part in upstream.split(",")]
        if not isinstance(upstream, list) or any(isinstance(p, (dict, list)) for p in upstream):
            raise refuse(
                "spec-syntax", "schemas", f"the upstream of {shown(name)} is not a list of names"
            )
        description = value.get("description") or ""
        if not isinstance(description, str):
            raise refuse("spec-syntax", "schemas", f"the description of {shown(name)} is not text")
        problem = printable_text(description.strip(), {})
        if problem:
            raise refuse("text", "schemas", f"the description of {shown(name)}: {problem}")
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


# Rules of one schema name, of (name, context): context gives the backend and the prefix.


def schema_name(name: str, context: dict) -> str:
    if IDENTIFIER.match(name):
        return ""
    return f"{shown(name)} is not a valid schema name (e.g. {suggest_name(name)[:40]!r})"


def schema_keyword(name: str, context: dict) -> str:
    return f"{name!r} is a Python keyword" if keyword.iskeyword(name) else ""


def schema_sql(name: str, context: dict) -> str:
    backend = context.get("database_backend", "mysql")
    reserved = SQL_RESERVED.get(backend) or SQL_RESERVED["mysql"] | SQL_RESERVED["postgresql"]
    return (
        f"{name!r} is reserved in {backend} (e.g. {name + '_data'!r})" if name in reserved else ""
    )


def schema_module(name: str, context: dict) -> str:
    names = project_names(context)
    if name in names.modules:
        taken = ", ".join(sorted(n for n in names.modules if IDENTIFIER.match(n)))
        return f"{name!r} is a name the package keeps for itself (it keeps {taken})"
    if f"test_{name}" in names.tests:
        return f"{name!r} would overwrite tests/test_{name}.py"
    return ""


def schema_shadow(name: str, context: dict) -> str:
    names = project_names(context)
    reason = (
        "used by the generated code"
        if name in names.code
        else "a module the project imports"
        if name in names.imports
        else "a Python builtin"
        if name in dir(builtins)
        else ""
    )
    return f"{name!r} is {reason} (e.g. {name + '_data'!r})" if reason else ""


def schema_length(name: str, context: dict) -> str:
    """The toolkit scaffold's length rule (add-schema applies the same one)."""
    scaffold = template_scaffold(template_dir(context))
    if scaffold is None:
        return ""
    prefix = context.get("schema_prefix", "")
    return scaffold.length_problem(name, prefix, context.get("database_backend", "mysql"))


SCHEMA_NAME_RULES = {
    "schema-name": schema_name,
    "schema-keyword": schema_keyword,
    "schema-sql": schema_sql,
    "schema-module": schema_module,
    "schema-shadow": schema_shadow,
    "schema-length": schema_length,
}


def check_schema_name(name: str, context: dict) -> None:
    """A schema name becomes a module name and, with a prefix, a database schema name."""
    for rule, check in SCHEMA_NAME_RULES.items():
        problem = check(name, context)
        if problem:
            raise refuse(rule, "schemas", problem)


def validate_pipeline(schemas: list[Schema], context: dict | None = None) -> None:
    """Count, names, duplicates, roles, unknown or self references, and cycles.

    `context` gives the database backend and the schema prefix (default: mysql, none).
    """
    context = context or {}
    if not schemas:
        raise refuse("spec-empty", "schemas", "the pipeline is empty")
    check_count(len(schemas))
    seen: set[str] = set()
    for schema in schemas:
        check_schema_name(schema.name, context)
        if schema.name in seen:
            raise refuse("spec-duplicate", "schemas", f"{schema.name!r} is listed twice")
        seen.add(schema.name)
        if schema.role and schema.role not in ROLES:
            raise refuse(
                "spec-role", "schemas", f"role {shown(schema.role)} of {schema.name!r} is unknown"
            )
    for schema in schemas:
        for parent in schema.upstream:
            if parent == schema.name:
                raise refuse("spec-self", "schemas", f"{schema.name!r} lists itself as upstream")
            if parent not in seen:
                listed = ", ".join(sorted(seen))
                raise refuse(
                    "spec-unknown",
                    "schemas",
                    f"{schema.name!r} depends on unknown schema {shown(parent)}",
                    f" (listed: {listed if len(listed) < 200 else listed[:200] + '...'})",
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
        role = (
            schema.role
            or KNOWN_ROLES.get(schema.name)
            or (
                "acquisition"
                if not schema.upstream
                else "processing"
                if schema.name in has_downstream
                else "analysis"
            )
        )
        result.append(Schema(schema.name, schema.upstream, schema.description, role))
    return result


def plan_pipeline(
    spec: object,
    backend: str = "mysql",
    prefix: str = "",
    spec_dirs: tuple[str, ...] = (),
    context: dict | None = None,
) -> list[Schema]:
    """Parse, validate and order the spec: the plan post_gen_project writes out."""
    schemas = parse_spec(spec, spec_dirs)
    validate_pipeline(
        schemas, {**(context or {}), "database_backend": backend, "schema_prefix": prefix}
    )
    return with_default_roles(dependency_order(schemas))


# --- every answer --------------------------------------------------------------

Rule = tuple[str, Callable[[object, dict], str]]
TEXT: tuple[Rule, ...] = (("answer-text", answer_text), ("text", printable_text))

#: The rules of each answer, checked in this order; `schemas` has the spec rules above.
FIELD_RULES: dict[str, tuple[Rule, ...]] = {
    "project_name": (*TEXT, ("project-name", project_name), ("visible", visible)),
    "author_name": (*TEXT, ("visible", visible)),
    "project_slug": (*TEXT, ("project-slug", project_slug)),
    "package_name": (*TEXT, ("package-name", package_name), ("package-shadow", package_shadow)),
    "author_email": (*TEXT, ("email", email)),
    "github_org": (*TEXT, ("github-org", github_org)),
    **{field: (*TEXT, ("choice", one_of(options))) for field, options in CHOICES.items()},
    "database_host": (*TEXT, ("host-url", host_url), ("host", host)),
    "database_port": (*TEXT, ("port", port)),
    "schema_prefix": (*TEXT, ("schema-prefix", schema_prefix)),
    "s3_endpoint": (*TEXT, ("s3-endpoint", s3_endpoint)),
    "s3_bucket": (*TEXT, ("s3-bucket", s3_bucket)),
    "store_location": (*TEXT, ("store-location", store_location)),
}


def spec_dirs(context: dict) -> tuple[str, ...]:
    """Where a relative spec file is looked up: the shell's working directory, else
    cookiecutter's output directory (by default the same)."""
    return (os.environ.get("PWD", ""), context.get("_output_dir", ""))


def check(field: str, value: object, context: dict) -> None:
    """Raise InputError if `value` breaks a rule of the answer `field`."""
    if field == "schemas":
        plan_pipeline(
            value,
            context.get("database_backend", "mysql"),
            context.get("schema_prefix", ""),
            spec_dirs(context),
            context,
        )
        return
    for rule, test in FIELD_RULES.get(field, TEXT):  # answers added later get TEXT
        problem = test(value, context)
        if problem:
            raise refuse(rule, field, problem)


def problem(field: str, value: object, context: dict) -> str:
    """The line a user sees if `value` breaks a rule of the answer `field`, else ""."""
    try:
        check(field, value, context)
    except InputError as error:
        return str(error)
    return ""


def answers_as_given(context: dict, given: dict | None) -> dict:
    """The rendered answers, with the lists and decimal numbers a config file gave
    (cookiecutter renders a list to its first item and 3.10 to '3.1')."""
    answers = dict(context)
    for field, value in (given or {}).items():
        if field in answers and isinstance(value, (list, float)):
            answers[field] = value
    return answers


def validate(context: dict, given: dict | None = None) -> list[Schema]:
    """Check every answer; return the pipeline plan."""
    answers = answers_as_given(context, given)
    fields = [*FIELD_RULES, *(field for field in answers if field not in FIELD_RULES)]
    for field in fields:
        if field != "schemas" and not field.startswith("_") and field in answers:
            check(field, answers[field], answers)
    return plan_pipeline(
        answers.get("schemas"),
        answers["database_backend"],
        answers["schema_prefix"],
        spec_dirs(answers),
        answers,
    )


def retry_hint(context: dict, field: str) -> str:
    """How to try again without typing every answer again: cookiecutter's replay file.

    cookiecutter saves the answers before it runs this hook; `--replay-file` reads
    them back without asking.
    """
    try:
        from cookiecutter.config import get_user_config

        replay_dir = Path(get_user_config()["replay_dir"])
    except (ImportError, OSError, KeyError, ValueError):  # no hint rather than a traceback
        return ""
    replay = replay_dir / f"{Path(context.get('_repo_dir', '')).resolve().name}.json"
    if not replay.is_file():
        return ""
    return (
        f"Your answers are saved in {replay}: correct {field!r} there and run\n"
        f"  cookiecutter --replay-file {replay} {context.get('_template', '<template>')}"
    )


def main() -> int:
    context = json.loads(RENDERED_CONTEXT)
    try:
        plan = validate(context, json.loads(GIVEN_ANSWERS))
    except InputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        hint = retry_hint(context, error.field)
        if hint:
            print(hint, file=sys.stderr)
        return 1
    Path(PLAN_FILE).write_text(
        json.dumps([asdict(schema) for schema in plan], indent=2), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
