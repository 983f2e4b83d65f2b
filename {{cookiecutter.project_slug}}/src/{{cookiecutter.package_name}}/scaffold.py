{% raw %}"""Write the schema modules of the pipeline.

The project template runs write_pipeline once, when the project is generated,
with the pipeline it was given: one module per schema, each importing its
upstream modules and declaring a starter table whose foreign keys point at
theirs. Later, `python -m <package> add-schema` runs add_schema to append one
more module without touching the existing ones. Starter tables are deliberately
small and runnable; replace them with your own.

Shapes:
- a root schema (no upstream) gets a Manual table of entities entered by hand;
- a schema whose upstream schemas are all roots (and the guide's ephys and
  imaging) gets an Imported table that acquires a raw signal per key (simulated
  until you read your own files);
- any other schema gets a Computed table that combines the upstream signals.

Only the standard library is used, so this runs before anything is installed.
"""

from __future__ import annotations

import ast
import keyword
import re
import textwrap
from pathlib import Path
from string import Template
from typing import Any

# The guide's table names for the default pipeline; other schemas are CamelCased.
KNOWN_TABLES = {
    "subject": "Subject",
    "session": "Session",
    "ephys": "Recording",
    "imaging": "Scan",
    "analysis": "MultiModalAnalysis",
}
# The guide acquires these from their own instruments, whatever is upstream.
ACQUIRED = frozenset({"ephys", "imaging"})
SAMPLE_ROWS = 3
FIRST_VERSION = "0.1.0"
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*\Z")
LINE_LENGTH = 100  # ruff's line-length in pyproject.toml: the modules are written as it formats


def table_class(schema: str) -> str:
    """Name of the starter table of a schema."""
    return KNOWN_TABLES.get(schema) or "".join(part.capitalize() for part in schema.split("_"))


def escaped(text: str) -> str:
    """Text that reads as itself inside a triple-quoted docstring."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    unescaped_end = re.search(r'(?<!\\)(\\\\)*"\Z', text)  # a last quote not escaped already
    return text[:-1] + '\\"' if unescaped_end else text


def docstring(text: str) -> str:
    """A module docstring of any one-line text, wrapped at 88 columns."""
    lines = textwrap.wrap(escaped(text.strip()), width=82) or [""]
    if len(lines) == 1:
        return f'"""{lines[0]}"""'
    return '"""' + "\n".join(lines) + '\n"""'


ROLE_SUMMARY = {
    "acquisition": "entries made when data are acquired",
    "processing": "processing of the acquired data",
    "analysis": "analysis results",
}

ROOT = Template('''\
$docstring

import datajoint as dj

schema = dj.Schema()


@schema
class $table(dj.Manual):
    """One $name entry, entered by hand or from another lab system."""

    definition = """
    ${name}_id : int32
    ---
    ${name}_name : varchar(64)
    """
''')

IMPORTED = Template('''\
$docstring

import datajoint as dj

$imports
from .utils import simulate_signal

schema = dj.Schema()


@schema
class $table(dj.Imported):
    """Raw signal acquired for each upstream entry.

    The starter make() simulates the acquisition; replace it with code that reads
    your instrument's files for the key.
    """

    definition = """
$foreign_keys
    ---
    sampling_rate : float64  # samples per second
    signal : $blob  # raw samples
    """

    def make(self, key):
        """Acquire the signal of one key."""
        sampling_rate, signal = simulate_signal(self.table_name, key)
        self.insert1({**key, "sampling_rate": sampling_rate, "signal": signal})
''')

COMPUTED = Template('''\
$docstring

import datajoint as dj

$imports
from .utils import combine_signals

schema = dj.Schema()


@schema
class $table(dj.Computed):
    """$summary"""

    definition = """
$foreign_keys
    ---
    signal : $blob  # $signal_comment
    peak : float64  # largest absolute value of the signal
$extra_attributes    """

    def make(self, key):
        """Combine the upstream signals of one key."""
        inputs = [
$inputs
        ]
        self.insert1({**key, **combine_signals(inputs)})
''')

TEST_ROOT = Template('''\
"""The $name schema holds the sample rows the tests entered."""

from $package import $name


def test_${name}_has_sample_rows(pipeline):
    assert len($name.$table()) == $rows
''')

TEST_AUTO = Template('''\
"""$name.$table is complete and its values follow from its inputs."""

import numpy as np

from $package import $name


def test_every_key_is_populated(pipeline):
    remaining, total = $name.$table().progress()
    assert total > 0
    assert remaining == 0


def test_values(pipeline):
    for row in $name.$table().to_dicts():
$checks
''')

IMPORTED_CHECKS = """\
        assert row["sampling_rate"] > 0
        assert row["signal"].ndim == 1
        assert np.isfinite(row["signal"]).all()"""

COMPUTED_CHECKS = """\
        signal = row["signal"]
        assert np.isfinite(signal).all()
        assert row["peak"] == np.abs(signal).max()"""

CORRELATION_CHECK = """
        assert -1.0 <= row["correlation"] <= 1.0"""

INIT = Template('''\
"""$title: DataJoint pipeline package.

One module per database schema, imported here upstream first; each module imports
the modules its foreign keys point to. Call activate() to bind every schema to the
database, in dependency order (see README, "Schema names").
"""

import os
from pathlib import Path

import datajoint as dj
from datajoint.settings import find_config_file
from dotenv import dotenv_values

from . import _compat  # noqa: F401  (fixes stored values on MariaDB; see _compat.py)
from . import devdb
$imports
from .utils import prepare_stores
from .version import SCHEMA_VERSIONS, __version__

devdb.use_if_unconfigured()  # no database user configured: the running dev-db, if any

#: Schema modules in dependency order: activate and populate in this order.
$modules

#: Each schema's upstream schemas: the pipeline's dependency graph, upstream first.
$pipeline

#: Each schema's role in the pipeline: acquisition, processing or analysis.
$roles

#: Environment variable that selects the schema names (production, dev_, personal).
PREFIX_VARIABLE = "$prefix_variable"
#: Prefix of the production schema names: in force only when PREFIX_VARIABLE names it.
PRODUCTION_PREFIX = "$production_prefix"
#: Prefix in force when nothing is configured: the shared development set.
DEVELOPMENT_PREFIX = "dev_" + PRODUCTION_PREFIX

__all__ = [
    "DEVELOPMENT_PREFIX",
    "MODULES",
    "PIPELINE",
    "SCHEMA_ROLES",
    "SCHEMA_VERSIONS",
    "__version__",
    "activate",
    "auto_tables",
    "schema_names",
]


def schema_prefix() -> str:
    """The prefix in force: $$$prefix_variable from the environment or the project's .env,
    else the shared development prefix. Production is never the default: it must be named."""
    if PREFIX_VARIABLE in os.environ:
        return os.environ[PREFIX_VARIABLE]
    config_file = find_config_file()
    value = dotenv_values((config_file.parent if config_file else Path.cwd()) / ".env").get(
        PREFIX_VARIABLE
    )
    return DEVELOPMENT_PREFIX if value is None else value


def prefix_kind(prefix: str | None = None) -> str:
    """What a schema set is: production, development (dev_...), test (test_...) or personal."""
    prefix = schema_prefix() if prefix is None else prefix
    if prefix == PRODUCTION_PREFIX:
        return "production"
    if prefix.startswith("dev_"):
        return "development"
    return "test" if prefix.startswith("test_") else "personal"


def short_name(module) -> str:
    """Name of a schema module without the package, e.g. 'subject'."""
    return module.__name__.rpartition(".")[2]


def schema_names(prefix: str | None = None) -> dict[str, str]:
    """Database schema name of every module, in dependency order."""
    prefix = schema_prefix() if prefix is None else prefix
    return {short_name(module): prefix + short_name(module) for module in MODULES}


def activate(prefix: str | None = None, *, connection=None, create: bool = True) -> dict[str, str]:
    """Bind every schema module to its database schema, creating what is missing.

    Schemas are activated upstream first, so each table's foreign keys can be
    declared. With create=False nothing is created (DataJoint's create_schema and
    create_tables off): only the schemas that exist are bound, and missing tables stay
    undeclared (``Table.is_declared`` is False). Returns the module-to-schema-name
    mapping of the schemas that were bound.
    """
    prepare_stores()
    names = schema_names(prefix)
    if not create:
        existing = set(dj.list_schemas(connection=connection))
        names = {module: name for module, name in names.items() if name in existing}
    for module in MODULES:
        if short_name(module) in names:
            module.schema.activate(
                names[short_name(module)],
                connection=connection,
                create_schema=create,
                create_tables=create,
            )
    return names


def auto_tables() -> list[type[dj.Table]]:
    """Every Imported and Computed table, in the order populate must run them."""
    return [
        table
        for module in MODULES
        for table in vars(module).values()
        if isinstance(table, type)
        and issubclass(table, (dj.Imported, dj.Computed))
        and table.__module__ == module.__name__
    ]
''')

VERSION = Template('''\
"""Version of the package and of each schema's table definitions.

Bump a schema's version whenever you change the definitions in its module, so the
database and the code can be checked against each other.
"""

__version__ = "$version"

$versions
''')

SAMPLE_DATA = Template('''\
"""Example rows for the pipeline's manual tables, used by the tests and notebooks.

Edit them along with your tables.
"""

from typing import Any

import datajoint as dj

$imports

#: Rows of each root table, keyed by the table: the tables that are entered by hand.
SAMPLE_ROWS: dict[type[dj.Table], list[dict[str, Any]]] = {
$entries}


def insert_sample_data() -> None:
    """Enter the sample rows, upstream first; rows already present are kept."""
    for table, rows in SAMPLE_ROWS.items():
        table.insert(rows, skip_duplicates=True)
''')


def python_literal(name: str, value: Any, *, tuple_of_names: bool = False) -> str:
    """`name = value` as ruff would format it: one line if it fits, else one item per line."""
    if tuple_of_names:
        items = list(value)
        one_line = f"{name} = ({', '.join(items)}{',' if len(items) == 1 else ''})"
        if len(one_line) <= LINE_LENGTH:
            return one_line
        return f"{name} = (\n" + "".join(f"    {item},\n" for item in items) + ")"
    lines = []
    for key, item in value.items():
        line = f"    {key!r}: {item!r},\n".replace("'", '"')
        if len(line) > LINE_LENGTH + 1 and isinstance(item, tuple):
            inner = "".join(f'        "{element}",\n' for element in item)
            line = f'    "{key}": (\n{inner}    ),\n'
        lines.append(line)
    return f"{name} = {{\n" + "".join(lines) + "}"


def import_statement(names: list[str], comment: str = "") -> str:
    """`from . import a, b` as ruff formats it: one line if it fits, else one name per line."""
    line = f"from . import {', '.join(names)}{comment}"
    if len(line) <= LINE_LENGTH:
        return line
    return f"from . import ({comment}\n" + "".join(f"    {name},\n" for name in names) + ")"


DIAGRAM = re.compile(
    r"(<!-- pipeline-diagram:start -->\n).*?(<!-- pipeline-diagram:end -->)", re.DOTALL
)
# Words Mermaid reads as syntax; such schemas get a suffixed node id and their name as label.
MERMAID_KEYWORDS = frozenset({"end", "graph", "flowchart", "subgraph", "style", "class", "click"})


def mermaid(pipeline: dict[str, tuple[str, ...]]) -> str:
    """The pipeline as a Mermaid flowchart, upstream to downstream (renders on GitHub)."""

    def node(name: str) -> str:
        return f'{name}_["{name}"]' if name in MERMAID_KEYWORDS else name

    lines = ["```mermaid", "flowchart LR"]
    for name, upstream in pipeline.items():
        lines += [f"    {node(parent)} --> {node(name)}" for parent in upstream]
        if not upstream:
            lines.append(f"    {node(name)}")
    return "\n".join([*lines, "```"]) + "\n"


def with_diagram(text: str, pipeline: dict[str, tuple[str, ...]]) -> str:
    """Text with the diagram between its pipeline-diagram markers brought up to date."""
    return DIAGRAM.sub(lambda match: match[1] + mermaid(pipeline) + match[2], text)


def combined_inputs(schema: dict, roots: set[str]) -> list[str]:
    """Upstream schemas whose signals the starter table combines; none means it acquires."""
    if schema["name"] in ACQUIRED:
        return []
    return [parent for parent in schema["upstream"] if parent not in roots]


def module_source(schema: dict, tables: dict[str, str], roots: set[str], blob: str) -> str:
    """Source of one schema module."""
    name, upstream = schema["name"], schema["upstream"]
    summary = schema.get("description") or f"The {name} schema: {ROLE_SUMMARY[schema['role']]}."
    fields = {"name": name, "table": tables[name], "docstring": docstring(summary), "blob": blob}
    if not upstream:
        return ROOT.substitute(fields)
    inputs = combined_inputs(schema, roots)
    unused = bool(set(upstream) - set(inputs))
    fields["imports"] = import_statement(
        sorted(upstream), "  # noqa: F401 - used by the foreign keys below" if unused else ""
    )
    fields["foreign_keys"] = "\n".join(f"    -> {parent}.{tables[parent]}" for parent in upstream)
    if not inputs:
        return IMPORTED.substitute(fields)
    many = len(inputs) > 1
    return COMPUTED.substitute(
        fields,
        summary=(
            f"Signals of {', '.join(inputs)} combined for each key."
            if many
            else f"Normalised signal of {inputs[0]} for each key."
        ),
        signal_comment="mean of the z-scored inputs" if many else "z-scored input",
        extra_attributes="    correlation : float64  # mean pairwise correlation of the inputs\n"
        if many
        else "",
        inputs="\n".join(
            f'            ({parent}.{tables[parent]} & key).fetch1("signal"),' for parent in inputs
        ),
    )


def test_source(schema: dict, tables: dict[str, str], roots: set[str], package: str) -> str:
    """Source of the test module of one schema."""
    name, upstream = schema["name"], schema["upstream"]
    fields = {"name": name, "table": tables[name], "package": package, "rows": SAMPLE_ROWS}
    if not upstream:
        return TEST_ROOT.substitute(fields)
    inputs = combined_inputs(schema, roots)
    checks = (
        IMPORTED_CHECKS
        if not inputs
        else COMPUTED_CHECKS + (CORRELATION_CHECK if len(inputs) > 1 else "")
    )
    return TEST_AUTO.substitute(fields, checks=checks)


def write_pipeline(
    project: Path,
    package: str,
    plan: list[dict],
    *,
    title: str,
    prefix: str,
    prefix_variable: str,
    blob: str,
) -> None:
    """Write every schema module, its test, and the files that list them all."""
    tables = {schema["name"]: table_class(schema["name"]) for schema in plan}
    roots = {schema["name"] for schema in plan if not schema["upstream"]}
    names = [schema["name"] for schema in plan]
    source = project / "src" / package
    tests = project / "tests"
    for schema in plan:
        (source / f"{schema['name']}.py").write_text(
            module_source(schema, tables, roots, blob), encoding="utf-8"
        )
        (tests / f"test_{schema['name']}.py").write_text(
            test_source(schema, tables, roots, package), encoding="utf-8"
        )
    (source / "__init__.py").write_text(
        INIT.substitute(
            title=escaped(title),
            imports="\n".join(f"from . import {name}" for name in names),
            modules=python_literal("MODULES", names, tuple_of_names=True),
            pipeline=python_literal("PIPELINE", {s["name"]: tuple(s["upstream"]) for s in plan}),
            roles=python_literal("SCHEMA_ROLES", {s["name"]: s["role"] for s in plan}),
            prefix_variable=prefix_variable,
            production_prefix=prefix,
        ),
        encoding="utf-8",
    )
    pipeline = {schema["name"]: tuple(schema["upstream"]) for schema in plan}
    for document in (project / "README.md", project / "docs" / "pipeline.md"):
        if document.is_file():
            document.write_text(
                with_diagram(document.read_text(encoding="utf-8"), pipeline), encoding="utf-8"
            )
    (source / "version.py").write_text(
        VERSION.substitute(
            version=FIRST_VERSION,
            versions=python_literal("SCHEMA_VERSIONS", dict.fromkeys(names, FIRST_VERSION)),
        ),
        encoding="utf-8",
    )
    (source / "sample_data.py").write_text(
        SAMPLE_DATA.substitute(
            imports=import_statement(sorted(roots)),
            entries="".join(
                sample_rows_entry(root, tables[root]) for root in names if root in roots
            ),
        ),
        encoding="utf-8",
    )


def find_assignment(source: str, name: str) -> ast.Assign | ast.AnnAssign:
    """The top-level `name = ...` statement of a module's source."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if getattr(target, "id", None) == name:
                return node
    raise ValueError(f"no top-level {name} = ... assignment found")


def literal(node: ast.Assign | ast.AnnAssign) -> Any:
    """The value of an assignment: names for a tuple of modules, else the literal."""
    if isinstance(node.value, ast.Tuple):
        return [ast.unparse(element) for element in node.value.elts]
    return ast.literal_eval(node.value) if node.value else None


def replace_assignment(source: str, name: str, text: str) -> str:
    """Source with the `name = ...` statement replaced by `text`."""
    node = find_assignment(source, name)
    lines = source.splitlines(keepends=True)
    lines[node.lineno - 1 : node.end_lineno] = [text.rstrip("\n") + "\n"]
    return "".join(lines)


def with_import(source: str, name: str) -> str:
    """Source with `from . import name` after its last such line."""
    lines = source.splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if line.startswith("from . import "))
    lines.insert(last + 1, f"from . import {name}\n")
    return "".join(lines)


def add_schema(
    package_dir: Path,
    tests_dir: Path,
    name: str,
    upstream: list[str],
    *,
    blob: str,
    description: str = "",
    role: str = "",
) -> list[Path]:
    """Add one schema module downstream of existing ones, with its test; returns new files.

    The schema is appended to MODULES, PIPELINE, SCHEMA_ROLES and SCHEMA_VERSIONS (and,
    for a root, to SAMPLE_ROWS): after every schema it depends on, so dependency order
    holds. Existing modules are not touched; nothing is written if anything is wrong.
    """
    paths = {
        "init": package_dir / "__init__.py",
        "version": package_dir / "version.py",
        "sample": package_dir / "sample_data.py",
    }
    sources = {key: path.read_text(encoding="utf-8") for key, path in paths.items()}
    pipeline = literal(find_assignment(sources["init"], "PIPELINE"))
    if not IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise ValueError(f"{name!r} is not a valid schema name (lowercase letters, digits, _)")
    if name in pipeline or (package_dir / f"{name}.py").exists():
        raise ValueError(f"{name!r} exists already")
    unknown = [parent for parent in upstream if parent not in pipeline]
    if unknown:
        known = ", ".join(pipeline)
        raise ValueError(f"unknown upstream schema(s) {', '.join(unknown)}; known: {known}")
    schema = {
        "name": name,
        "upstream": list(upstream),
        "description": description,
        "role": role or ("analysis" if upstream else "acquisition"),
    }
    roots = {schema_name for schema_name, parents in pipeline.items() if not parents}
    tables = {schema_name: table_class(schema_name) for schema_name in [*pipeline, name]}

    init = sources["init"]
    roles = literal(find_assignment(init, "SCHEMA_ROLES"))
    modules = literal(find_assignment(init, "MODULES"))
    init = replace_assignment(
        init, "PIPELINE", python_literal("PIPELINE", {**pipeline, name: tuple(upstream)})
    )
    init = replace_assignment(
        init, "SCHEMA_ROLES", python_literal("SCHEMA_ROLES", {**roles, name: schema["role"]})
    )
    init = replace_assignment(
        init, "MODULES", python_literal("MODULES", [*modules, name], tuple_of_names=True)
    )
    versions = literal(find_assignment(sources["version"], "SCHEMA_VERSIONS"))
    updated = {
        paths["init"]: with_import(init, name),
        paths["version"]: replace_assignment(
            sources["version"],
            "SCHEMA_VERSIONS",
            python_literal("SCHEMA_VERSIONS", {**versions, name: FIRST_VERSION}),
        ),
        package_dir / f"{name}.py": module_source(schema, tables, roots, blob),
        tests_dir / f"test_{name}.py": test_source(schema, tables, roots, package_dir.name),
    }
    if not upstream:  # a new root needs sample rows for its test
        sample = sources["sample"]
        node = find_assignment(sample, "SAMPLE_ROWS")
        end = node.end_lineno or node.lineno
        lines = sample.splitlines(keepends=True)
        lines.insert(end - 1, sample_rows_entry(name, tables[name]))
        updated[paths["sample"]] = with_root_import("".join(lines), name)
    project = tests_dir.parent
    for document in (project / "README.md", project / "docs" / "pipeline.md"):
        if document.is_file():
            text = document.read_text(encoding="utf-8")
            updated[document] = with_diagram(text, {**pipeline, name: tuple(upstream)})
    for path, text in updated.items():
        path.write_text(text, encoding="utf-8")
    return [package_dir / f"{name}.py", tests_dir / f"test_{name}.py"]


def with_root_import(source: str, name: str) -> str:
    """sample_data.py's source with `name` added to its `from . import ...` statement."""
    node = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
    )
    names = sorted([*(alias.name for alias in node.names), name])
    lines = source.splitlines(keepends=True)
    lines[node.lineno - 1 : node.end_lineno] = [import_statement(names) + "\n"]
    return "".join(lines)


def sample_rows_entry(root: str, table: str) -> str:
    """The SAMPLE_ROWS entry of one root table (a row that does not fit: one field a line)."""
    rows = ""
    for i in range(1, SAMPLE_ROWS + 1):
        fields = [f'"{root}_id": {i}', f'"{root}_name": "{root} {i}"']
        row = f"        {{{', '.join(fields)}}},\n"
        if len(row) > LINE_LENGTH + 1:
            row = (
                "        {\n"
                + "".join(f"            {field},\n" for field in fields)
                + "        },\n"
            )
        rows += row
    return f"    {root}.{table}: [\n{rows}    ],\n"
{% endraw %}