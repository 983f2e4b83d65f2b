"""Write the schema modules of the pipeline from its plan.

The project template runs this once, when the project is generated, with the
pipeline it was given: one module per schema, each importing its upstream
modules and declaring a starter table whose foreign keys point at theirs.
Starter tables are deliberately small and runnable; replace them with your own.

Shapes:
- a root schema (no upstream) gets a Manual table of entities entered by hand;
- a schema whose upstream schemas are all roots (and the guide's ephys and
  imaging) gets an Imported table that acquires a raw signal per key (simulated
  until you read your own files);
- any other schema gets a Computed table that combines the upstream signals.

Only the standard library is used, so this runs before anything is installed.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from string import Template

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


def table_class(schema: str) -> str:
    """Name of the starter table of a schema."""
    return KNOWN_TABLES.get(schema) or "".join(part.capitalize() for part in schema.split("_"))


def docstring(text: str, indent: str = "") -> str:
    """A triple-quoted docstring of any text, wrapped at 88 columns."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    lines = textwrap.wrap(text, width=88 - len(indent) - 6) or [""]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""'
    body = "\n".join(f"{indent}{line}" for line in lines)
    return f'{indent}"""{body.lstrip()}\n{indent}"""'


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

import datajoint as dj

from . import _compat  # noqa: F401  (fixes stored values on MariaDB; see _compat.py)
$imports
from .utils import prepare_stores
from .version import SCHEMA_VERSIONS, __version__

#: Schema modules in dependency order: activate and populate in this order.
$modules

#: Each schema's upstream schemas: the pipeline's dependency graph, upstream first.
$pipeline

#: Each schema's role in the pipeline: acquisition, processing or analysis.
$roles

#: Environment variable that selects the schema names (production, dev_, personal).
PREFIX_VARIABLE = "$prefix_variable"
#: Prefix of the production schema names.
PRODUCTION_PREFIX = "$production_prefix"

__all__ = [
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
    """The prefix in force: $$$prefix_variable if set, else the production one."""
    return os.environ.get(PREFIX_VARIABLE, PRODUCTION_PREFIX)


def short_name(module) -> str:
    """Name of a schema module without the package, e.g. 'subject'."""
    return module.__name__.rpartition(".")[2]


def schema_names(prefix: str | None = None) -> dict[str, str]:
    """Database schema name of every module, in dependency order."""
    prefix = schema_prefix() if prefix is None else prefix
    return {short_name(module): prefix + short_name(module) for module in MODULES}


def activate(prefix: str | None = None, *, connection=None) -> dict[str, str]:
    """Bind every schema module to its database schema, creating what is missing.

    Schemas are activated upstream first, so each table's foreign keys can be
    declared. Returns the module-to-schema-name mapping that was used.
    """
    prepare_stores()
    names = schema_names(prefix)
    for module in MODULES:
        module.schema.activate(names[short_name(module)], connection=connection)
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

SCHEMA_VERSIONS = {
$entries
}
''')

SAMPLE_DATA = Template('''\
"""Example rows for the pipeline's manual tables, used by the tests and notebooks.

Edit them along with your tables.
"""

$imports

SAMPLE_ROWS = {
$entries
}


def insert_sample_data() -> None:
    """Enter the sample rows, upstream first; rows already present are kept."""
    for table, rows in SAMPLE_ROWS.items():
        table.insert(rows, skip_duplicates=True)
''')


def python_literal(name: str, value: dict | list, *, tuple_of_names: bool = False) -> str:
    """`name = value` as ruff would format it: one line if it fits, else one item per line."""
    if tuple_of_names:
        items = list(value)
        one_line = f"{name} = ({', '.join(items)}{',' if len(items) == 1 else ''})"
        if len(one_line) <= 100:
            return one_line
        return f"{name} = (\n" + "".join(f"    {item},\n" for item in items) + ")"
    lines = [f"    {key!r}: {item!r},\n".replace("'", '"') for key, item in value.items()]
    return f"{name} = {{\n" + "".join(lines) + "}"


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
    fields["imports"] = f"from . import {', '.join(sorted(upstream))}"
    if set(upstream) - set(inputs):
        fields["imports"] += "  # noqa: F401  (the foreign keys below refer to them)"
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
            title=title.replace("\\", "\\\\").replace('"""', '\\"\\"\\"'),
            imports="\n".join(f"from . import {name}" for name in names),
            modules=python_literal("MODULES", names, tuple_of_names=True),
            pipeline=python_literal("PIPELINE", {s["name"]: tuple(s["upstream"]) for s in plan}),
            roles=python_literal("SCHEMA_ROLES", {s["name"]: s["role"] for s in plan}),
            prefix_variable=prefix_variable,
            production_prefix=prefix,
        ),
        encoding="utf-8",
    )
    (source / "version.py").write_text(
        VERSION.substitute(
            version=FIRST_VERSION,
            entries="\n".join(f'    "{name}": "{FIRST_VERSION}",' for name in names),
        ),
        encoding="utf-8",
    )
    (source / "sample_data.py").write_text(
        SAMPLE_DATA.substitute(
            imports="\n".join(f"from . import {name}" for name in names if name in roots),
            entries="\n".join(
                f"    {root}.{tables[root]}: [\n"
                + "".join(
                    f'        {{"{root}_id": {i}, "{root}_name": "{root} {i}"}},\n'
                    for i in range(1, SAMPLE_ROWS + 1)
                )
                + "    ],"
                for root in names
                if root in roots
            ),
        ),
        encoding="utf-8",
    )


def read_plan(path: Path) -> list[dict]:
    """The plan the template's pre-generation hook wrote: schemas in dependency order."""
    return json.loads(path.read_text(encoding="utf-8"))
