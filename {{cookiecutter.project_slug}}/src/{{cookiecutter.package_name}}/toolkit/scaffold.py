"""Write the schema modules of the pipeline (the template's module writer).

The project template runs write_pipeline once, when the project is generated:
one module per schema at the top of the lab's package, each importing its upstream
modules and declaring starter tables whose foreign keys point at theirs, plus the
package's __init__.py that lists them, the schema versions, the sample data
(tests/sample_data.py) and one test per schema. Later,
`python -m <package> add-schema` runs add_schema to append one more module,
written against the tables the pipeline has by then. Starter tables are small
and runnable; replace them with your own.

A schema's role and place in the graph decide its tables:
- a schema with no upstream schema gets a Manual table of entries made by hand;
- an acquisition schema fed only by such schemas gets a Manual table of events
  with their own id and date (the guide's session);
- a schema with nothing computed upstream to work on (and the guide's ephys and
  imaging) acquires data: a Lookup of devices with `contents`, and an Imported
  table with a Part table of channels (simulated until you read your files);
- every other schema gets a Computed table that combines the upstream signals.

Only the standard library is used, so this runs before anything is installed.
"""

from __future__ import annotations

import ast
import json
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
# The devices of the guide's acquisition schemas: Lookup name, key attribute, contents.
KNOWN_DEVICES = {
    "ephys": ("Probe", "probe_type", [("tetrode", 4), ("stereotrode", 2)]),
    "imaging": ("Microscope", "microscope", [("two-photon", 2)]),
}
# The guide acquires these from their own instruments, whatever is upstream.
ACQUIRED = frozenset({"ephys", "imaging"})
SAMPLE_ROWS = 3
# Widths of the starter's text columns, widened to hold what the starter itself stores.
NAME_WIDTH = 64
DEVICE_WIDTH = 32
FIRST_VERSION = "0.1.0"
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*\Z")
LINE_LENGTH = 100  # ruff's line-length in pyproject.toml: the modules are written as it formats
SAMPLE_FILE = Path("tests", "sample_data.py")  # the lab's sample rows, for tests and notebooks
# Names a schema may not take: the package's own modules and folder, the names its
# __init__.py binds, and the tests' own files. The template's pre_gen hook refuses them too.
RESERVED = frozenset(
    {"toolkit", "version", "worker", "pipeline", "activate", "tests", "sample_data", "conftest"}
)
# The schema-length rule (the pre-generation hook applies it too): the production prefix,
# 8 characters for a development prefix, the tests' longest prefixes (19 characters: the
# throwaway test_<6 hex>_ with ro<4 hex>_ added by the toolkit's operation tests, and on
# MySQL the grant pattern of its development set, dev\_test\_<6 hex>\_) and the longest
# starter table's 10 (_<schema>__channel) must leave room for the name within the
# backend's identifier limit; on MySQL each '_' counts twice (grants escape it).
IDENTIFIER_LIMIT = {"mysql": 64, "postgresql": 63}
DEVELOPMENT_PREFIX_ROOM = 8
TEST_PREFIX_ROOM = 19
TABLE_NAME_ROOM = 10


def identifier_length(text: str, backend: str) -> int:
    """The length a name counts for: on MySQL each '_' twice, as grants escape it ('\\_')."""
    return len(text) + (text.count("_") if backend != "postgresql" else 0)


def length_problem(name: str, prefix: str, backend: str) -> str:
    """What is wrong with the length of a schema name after this prefix, or ""."""
    limit = IDENTIFIER_LIMIT.get(backend, min(IDENTIFIER_LIMIT.values()))
    before = identifier_length(prefix, backend) + DEVELOPMENT_PREFIX_ROOM
    room = limit - max(before, TEST_PREFIX_ROOM, TABLE_NAME_ROOM)
    length = identifier_length(name, backend)
    if length <= room:
        return ""
    if room < 1:
        return f"the prefix {prefix!r} leaves no room for a schema name on {backend}"
    counted = f"{length} characters" + (" (each '_' twice)" if length > len(name) else "")
    after = (
        f"the prefix {prefix!r}"
        if before >= TEST_PREFIX_ROOM
        else f"the tests' {TEST_PREFIX_ROOM}-character prefixes"
    )
    return f"{name!r} counts {counted}, {room} at most fit after {after} on {backend}"


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def table_class(schema: str) -> str:
    """Name of the starter table of a schema."""
    return KNOWN_TABLES.get(schema) or camel(schema)


def device(schema: str) -> tuple[str, str, list[tuple[str, int]]]:
    """The Lookup of devices of an acquiring schema: class, key attribute, contents."""
    if schema in KNOWN_DEVICES:
        return KNOWN_DEVICES[schema]
    return f"{camel(schema)}Device", f"{schema}_device", [(f"{schema} rig", 2)]


def entity_names(schema: str) -> list[str]:
    """The names of the sample rows of an entity table."""
    return [f"{schema} {number}" for number in range(1, SAMPLE_ROWS + 1)]


def width(default: int, values: list[str]) -> int:
    """A varchar width: the default, or more if a value the starter stores needs it."""
    return max(default, *map(len, values))


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

HEAD = Template("""\
$docstring

$imports
schema = dj.Schema()
ROLE = "$role"  # acquisition, processing or analysis: decides who may write here
""")

ENTITY = Template('''

@schema
class $table(dj.Manual):
    """One $name, entered by hand or from another lab system."""

    definition = """
    ${name}_id : int32
    ---
    ${name}_name : varchar($name_width)
    """
''')

EVENT = Template('''

@schema
class $table(dj.Manual):
    """One $name of an upstream entry, entered by hand when it happens."""

    definition = """
$foreign_keys
    ${name}_id : int32  # numbered per upstream entry
    ---
    ${name}_date : date
    """
''')

IMPORTED = Template('''

@schema
class $device(dj.Lookup):
    """The kinds of $device_words the lab acquires data with; add a row for a new one."""

    definition = """
    $device_key : varchar($device_width)
    ---
    num_channels : int32
    """
    contents = $contents


@schema
class $table(dj.Imported):
    """The channels acquired for each upstream entry with each kind of $device_word.

    The starter make() simulates the acquisition; replace it with code that reads
    your instrument's files for the key.
    """

    definition = """
$foreign_keys
    -> $device
    ---
    sampling_rate : float64  # samples per second
    """

    class Channel(dj.Part):
        """One channel of the acquisition."""

        definition = """
        -> master
        channel : int32
        ---
        signal : $blob  # raw samples
        """

    def make(self, key):
        """Acquire every channel of one key."""
$channel_count
        sampling_rate, signals = simulate_channels(self.table_name, key, num_channels)
        self.insert1({**key, "sampling_rate": sampling_rate})
        self.Channel.insert(
            [{**key, "channel": number, "signal": signal} for number, signal in enumerate(signals)]
        )
''')

COMPUTED = Template('''

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

ADDED = Template('''

@schema
class $table(dj.Computed):
    """One result per combination of the upstream entries; replace with your computation."""

    definition = """
$foreign_keys
    ---
    input_rows : int32  # upstream rows of this key
    """

    def make(self, key):
        """Count the upstream rows of one key (a placeholder computation)."""
$upstream_tables
        self.insert1({**key, "input_rows": sum(len(table & key) for table in upstream)})
''')

TEST_HEAD = Template('''\
"""Tests of the starter tables of $name: the lab's to edit or delete with the tables.

The project's framework tests (test_pipeline.py and the others) find the tables by
themselves and keep working whatever the schema modules hold.
"""

${imports}$import_line
''')

TEST_MANUAL = Template("""

def test_${lower}_has_sample_rows(pipeline):
$count_check
""")

TEST_IMPORTED = Template("""

def test_${lower}_channels(pipeline):
$table_line
$devices_line
    recordings = table()
    assert len(recordings) > 0
    for key in recordings.proj().to_dicts():
        channels = (table.Channel & key).to_dicts()
        assert len(channels) == (devices & key).fetch1("num_channels")
        assert all(np.isfinite(channel["signal"]).all() for channel in channels)
""")

TEST_COMPUTED = Template("""

def test_${lower}_values(pipeline):
$rows_line
    assert rows
    for row in rows:
        assert np.isfinite(row["signal"]).all()
        assert row["peak"] == np.abs(row["signal"]).max()$correlation
""")

TEST_ADDED = Template("""

def test_${lower}_counts_its_inputs(pipeline):
$rows_line
    assert all(row["input_rows"] > 0 for row in rows)
""")

CORRELATION_CHECK = """
        assert -1.0 <= row["correlation"] <= 1.0"""

LAB_INIT = Template('''\
"""$docstring_name: the lab's DataJoint pipeline, one module per database schema.

Import every schema module here, upstream first, and list it in MODULES: the
toolkit (the `toolkit` folder, the template's) activates and populates them in
this order and derives the schema graph from the modules' own imports.
"""

from .toolkit import Pipeline
from .version import SCHEMA_VERSIONS, __version__

# The schema modules, upstream first like MODULES (isort would sort them).
# isort: off
$imports

MODULES = $modules

#: The pipeline as the toolkit (command line, worker, dashboard) receives it.
pipeline = Pipeline(
    MODULES,
    name=$name,
    production_prefix=$production_prefix,  # production's schema names start with it
    settings_prefix=$settings_prefix,  # ${settings_bare}_SCHEMA_PREFIX: the schemas in force
    version=__version__,
    schema_versions=SCHEMA_VERSIONS,
)
activate = pipeline.activate
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
"""Sample rows for the manual tables: the tests and the notebooks enter them.

SAMPLE_DATA is a list of passes. A pass maps tables to their rows, or to a function
returning the rows (called when the pass is entered). `pipeline.insert_sample_data()`
enters one pass, upstream first, then populates every Imported and Computed table, then
enters the next: rows that need computed results first (a task table, e.g. the
parameters chosen for a computed result) go in a later pass. Edit them along with
your tables.
"""

$imports

#: Passes of sample rows: each maps a table to its rows, or to a function returning them.
SAMPLE_DATA: list[dict[type[dj.Table], Any]] = [
    {
$entries    },
]
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
    return f"{name} = " + "{\n" + "".join(lines) + "}"


# Lines holding names (a long schema name is 90 characters as `module.Class`), written as
# ruff formats them: on one line if it fits, else split where ruff splits it.


def fits(*lines: str) -> bool:
    return all(len(line) <= LINE_LENGTH for line in lines)


def assignment(indent: str, target: str, value: str) -> str:
    """`target = value`, its value wrapped in parentheses if only that makes it fit."""
    line, inner = f"{indent}{target} = {value}", f"{indent}    {value}"
    if fits(line) or not fits(inner):
        return line
    return f"{indent}{target} = (\n{inner}\n{indent})"


def signal_input(source: str, indent: str = " " * 12) -> str:
    """One item of a computed table's inputs: `mean_signal(<source> & key),`."""
    line = f"{indent}mean_signal({source} & key),"
    if fits(line):
        return line
    inner = f"{indent}    {source} & key"
    if not fits(inner):
        inner = f"{indent}    {source}\n{indent}    & key"
    return f"{indent}mean_signal(\n{inner}\n{indent}),"


def channel_count(device: str, indent: str = " " * 8) -> str:
    """make()'s first line: the number of channels of the key's device."""
    head = f"{indent}num_channels = ({device} & key).fetch1("
    if fits(head + '"num_channels")'):
        return head + '"num_channels")'
    if fits(head):
        return f'{head}\n{indent}    "num_channels"\n{indent})'
    return f'{indent}num_channels = (\n{indent}    {device} & key\n{indent}).fetch1("num_channels")'


def list_of(indent: str, target: str, items: list[str]) -> str:
    """`target = [items]` on one line, else one item a line."""
    line = f"{indent}{target} = [{', '.join(items)}]"
    if fits(line):
        return line
    return (
        f"{indent}{target} = [\n"
        + "".join(f"{indent}    {item},\n" for item in items)
        + f"{indent}]"
    )


def count_check(source: str, rows: int, indent: str = " " * 4) -> str:
    """`assert len(<source>()) == rows`."""
    call, inner = f"len({source}())", indent * 2
    if fits(f"{indent}assert {call} == {rows}"):
        return f"{indent}assert {call} == {rows}"
    if fits(f"{inner}{call} == {rows}"):
        body = f"{inner}{call} == {rows}"
    elif fits(inner + call):
        body = f"{inner}{call}\n{inner}== {rows}"
    else:
        body = f"{inner}len(\n{inner}    {source}()\n{inner})\n{inner}== {rows}"
    return f"{indent}assert (\n{body}\n{indent})"


def import_line(module: str, name: str) -> str:
    """`from module import name`."""
    line = f"from {module} import {name}"
    return line if fits(line) else f"from {module} import (\n    {name},\n)"


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


def table_kinds(plan: list[dict]) -> dict[str, str]:
    """The kind of starter table of each schema: entity, event, imported or computed."""
    kinds: dict[str, str] = {}
    for schema in plan:
        name, upstream = schema["name"], schema["upstream"]
        signals = [parent for parent in upstream if kinds[parent] in ("imported", "computed")]
        if not upstream:
            kinds[name] = "entity"
        elif name in ACQUIRED:
            kinds[name] = "imported"
        elif schema["role"] == "acquisition" and all(kinds[p] == "entity" for p in upstream):
            kinds[name] = "event"
        elif not signals or schema["role"] == "acquisition":
            kinds[name] = "imported"
        else:
            kinds[name] = "computed"
    return kinds


def signal_source(parent: str, kinds: dict[str, str], tables: dict[str, str]) -> str:
    """The table whose `signal` rows hold an upstream schema's signal."""
    channel = ".Channel" if kinds[parent] == "imported" else ""
    return f"{parent}.{tables[parent]}{channel}"


def module_source(schema: dict, tables: dict[str, str], kinds: dict[str, str], blob: str) -> str:
    """Source of one schema module."""
    name, upstream, kind = schema["name"], schema["upstream"], kinds[schema["name"]]
    summary = schema.get("description") or f"The {name} schema: {ROLE_SUMMARY[schema['role']]}."
    imports = ["import datajoint as dj", ""]
    if upstream:
        imports.append(import_statement(upstream))
    if kind == "imported":
        imports.append("from .toolkit.utils import simulate_channels")
    if kind == "computed":
        imports.append("from .toolkit.utils import combine_signals, mean_signal")
    fields = {
        "name": name,
        "table": tables[name],
        "blob": blob,
        "foreign_keys": "\n".join(f"    -> {parent}.{tables[parent]}" for parent in upstream),
        "name_width": width(NAME_WIDTH, entity_names(name)),
    }
    head = HEAD.substitute(
        docstring=docstring(summary),
        imports="\n".join(imports) + ("\n" if len(imports) > 2 else ""),
        role=schema["role"],
    )
    if kind == "entity":
        return head + ENTITY.substitute(fields)
    if kind == "event":
        return head + EVENT.substitute(fields)
    if kind == "imported":
        lookup, key, contents = device(name)
        return head + IMPORTED.substitute(
            fields,
            device=lookup,
            channel_count=channel_count(lookup),
            device_key=key,
            device_width=width(DEVICE_WIDTH, [kind for kind, _ in contents]),
            device_word=re.sub(r"(?<!^)(?=[A-Z])", " ", lookup).lower(),
            device_words=re.sub(r"(?<!^)(?=[A-Z])", " ", lookup).lower() + "s",
            contents="[\n"
            + "".join(
                sample_row("{" + f'"{key}": "{kind}", "num_channels": {channels}' + "}", " " * 8)
                for kind, channels in contents
            )
            + "    ]",
        )
    inputs = [parent for parent in upstream if kinds[parent] in ("imported", "computed")]
    many = len(inputs) > 1
    return head + COMPUTED.substitute(
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
        inputs="\n".join(signal_input(signal_source(parent, kinds, tables)) for parent in inputs),
    )


def test_source(schema: dict, tables: dict[str, str], kinds: dict[str, str], package: str) -> str:
    """Source of the (lab's) test module of one schema's starter tables."""
    name, kind = schema["name"], kinds[schema["name"]]
    fields = {
        "name": name,
        "table": tables[name],
        "lower": name,
        "package": package,
        "imports": "" if kind in ("entity", "event") else "import numpy as np\n\n",
        "import_line": import_line(package, name),
    }
    head = TEST_HEAD.substitute(fields)
    table = f"{name}.{tables[name]}"
    if kind in ("entity", "event"):
        return head + TEST_MANUAL.substitute(fields, count_check=count_check(table, SAMPLE_ROWS))
    if kind == "imported":
        return head + TEST_IMPORTED.substitute(
            fields,
            table_line=assignment("    ", "table", table),
            devices_line=assignment("    ", "devices", f"{name}.{device(name)[0]}"),
        )
    many = len([p for p in schema["upstream"] if kinds[p] in ("imported", "computed")]) > 1
    return head + TEST_COMPUTED.substitute(
        fields,
        rows_line=assignment("    ", "rows", f"{table}().to_dicts()"),
        correlation=CORRELATION_CHECK if many else "",
    )


def sample_entries(plan: list[dict], tables: dict[str, str], kinds: dict[str, str]) -> str:
    """The SAMPLE_DATA entries of the manual tables: three rows each."""
    entries = []
    for schema in plan:
        name, upstream = schema["name"], schema["upstream"]
        if kinds[name] == "entity":
            rows = [
                "{" + f'"{name}_id": {i}, "{name}_name": "{text}"' + "}"
                for i, text in enumerate(entity_names(name), start=1)
            ]
        elif kinds[name] == "event":
            keys = "".join(f'"{parent}_id": ' + "{i}, " for parent in upstream)
            rows = [
                "{" + keys.format(i=i) + f'"{name}_id": 1, '
                f'"{name}_date": datetime.date(2026, 1, {i})' + "}"
                for i in range(1, SAMPLE_ROWS + 1)
            ]
        else:
            continue
        lines = "".join(map(sample_row, rows))
        entries.append(f"        {name}.{tables[name]}: [\n{lines}        ],\n")
    return "".join(entries)


def sample_row(row: str, indent: str = " " * 12) -> str:
    """One row (a dict literal) of a list, as ruff formats it: on one line if it fits,
    else one field a line."""
    line = f"{indent}{row},\n"
    if len(line) <= LINE_LENGTH + 1:
        return line
    fields = re.findall(r'"[^"]*": (?:"[^"]*"|datetime\.date\([^)]*\)|[^,}]+)', row)
    inner = "".join(f"{indent}    {field},\n" for field in fields)
    return indent + "{\n" + inner + indent + "},\n"


def python_string(text: str) -> str:
    """A string literal of any one-line text as ruff formats it: double quotes, unless the
    text holds more double quotes than single ones."""
    body = json.dumps(text, ensure_ascii=False)[1:-1]  # escapes backslashes, quotes, controls
    if text.count('"') > text.count("'"):
        return "'" + body.replace('\\"', '"').replace("'", "\\'") + "'"
    return f'"{body}"'


def lab_init(names: list[str], *, name: str, production_prefix: str, settings_prefix: str):
    """Source of the lab's package __init__.py: the schema modules, upstream first."""
    return LAB_INIT.substitute(
        docstring_name=escaped(name),
        imports="\n".join(f"from . import {module}" for module in names),
        modules=python_literal("MODULES", names, tuple_of_names=True)[len("MODULES = ") :],
        name=python_string(name),
        production_prefix=json.dumps(production_prefix),
        settings_prefix=json.dumps(settings_prefix),
        settings_bare=settings_prefix,
    )


def write_pipeline(
    project: Path,
    package: str,
    plan: list[dict],
    *,
    blob: str,
    name: str,
    production_prefix: str,
    settings_prefix: str,
) -> None:
    """Write every schema module, its test, and the files that list them all."""
    tables = {schema["name"]: table_class(schema["name"]) for schema in plan}
    kinds = table_kinds(plan)
    names = [schema["name"] for schema in plan]
    source = project / "src" / package
    source.mkdir(parents=True, exist_ok=True)
    tests = project / "tests"
    for schema in plan:
        (source / f"{schema['name']}.py").write_text(
            module_source(schema, tables, kinds, blob), encoding="utf-8"
        )
        (tests / f"test_{schema['name']}.py").write_text(
            test_source(schema, tables, kinds, package), encoding="utf-8"
        )
    (source / "__init__.py").write_text(
        lab_init(
            names, name=name, production_prefix=production_prefix, settings_prefix=settings_prefix
        ),
        encoding="utf-8",
    )
    # Upstream schemas in dependency order, as Pipeline derives its graph from the imports.
    refresh_diagrams(
        project,
        {s["name"]: tuple(n for n in names if n in s["upstream"]) for s in plan},
    )
    (source / "version.py").write_text(
        VERSION.substitute(
            version=FIRST_VERSION,
            versions=python_literal("SCHEMA_VERSIONS", dict.fromkeys(names, FIRST_VERSION)),
        ),
        encoding="utf-8",
    )
    manual = sorted(name for name in names if kinds[name] in ("entity", "event"))
    (project / SAMPLE_FILE).write_text(
        SAMPLE_DATA.substitute(
            imports=("import datetime\n" if "event" in kinds.values() else "")
            + "from typing import Any\n\nimport datajoint as dj\n\n"
            + import_statement(manual, package),
            entries=sample_entries(plan, tables, kinds),
        ),
        encoding="utf-8",
    )


def find_assignment(source: str, name: str) -> ast.Assign | ast.AnnAssign:
    """The top-level `name = ...` (or `name: type = ...`) statement of a module's source."""
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


def natural(name: str) -> list[Any]:
    """Sort key of ruff's isort: digits compare as numbers (s7 before s13)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def import_statement(names: list[str], package: str = ".") -> str:
    """`from <package> import ...` of these names as ruff formats it."""
    names = sorted(names, key=natural)
    line = f"from {package} import {', '.join(names)}"
    if len(line) <= LINE_LENGTH:
        return line
    return f"from {package} import (\n" + "".join(f"    {name},\n" for name in names) + ")"


def with_import(source: str, name: str, package: str) -> str:
    """Source whose `from <package> import ...` statement also imports `name`."""
    node = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package
    )
    lines = source.splitlines(keepends=True)
    names = [alias.name for alias in node.names] + [name]
    lines[node.lineno - 1 : node.end_lineno] = [import_statement(names, package) + "\n"]
    return "".join(lines)


def with_module_import(source: str, name: str) -> str:
    """The lab's __init__.py with `from . import name` after its last schema import."""
    node = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
    ][-1]
    lines = source.splitlines(keepends=True)
    lines.insert(node.end_lineno or node.lineno, f"from . import {name}\n")
    return "".join(lines)


def add_schema(
    package_dir: Path,
    tests_dir: Path,
    name: str,
    upstream: list[str],
    *,
    tables: dict[str, list[str]],
    blob: str,
    description: str = "",
    role: str = "",
    prefix: str = "",
    backend: str = "mysql",
) -> list[Path]:
    """Add one schema module downstream of existing ones, with its test; returns new files.

    `tables` names the tables each existing schema module defines now, most downstream
    last (the CLI reads them from the imported package). The new module's table has a
    foreign key to the last table of each upstream schema; a new root gets a Manual
    table and sample rows. The schema is appended to MODULES and SCHEMA_VERSIONS, after
    every schema it depends on, and to the `schemas` answer in .cruft.json. Existing
    schema modules are not touched; nothing is written if anything is wrong. `prefix`
    (the production prefix) and `backend` bound the name's length as the template did.
    """
    project = tests_dir.parent
    paths = {
        "init": package_dir / "__init__.py",
        "version": package_dir / "version.py",
        "sample": project / SAMPLE_FILE,
    }
    sources = {key: path.read_text(encoding="utf-8") for key, path in paths.items()}
    modules = literal(find_assignment(sources["init"], "MODULES"))
    if not IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise ValueError(f"{name!r} is not a valid schema name (lowercase letters, digits, _)")
    if name in RESERVED:
        raise ValueError(f"{name!r} is reserved: {', '.join(sorted(RESERVED))} are the package's")
    if length_problem(name, prefix, backend):
        raise ValueError(length_problem(name, prefix, backend))
    if name in modules or (package_dir / f"{name}.py").exists() or (package_dir / name).exists():
        raise ValueError(f"{name!r} exists already")
    unknown = [parent for parent in upstream if parent not in modules]
    if unknown:
        raise ValueError(
            f"unknown upstream schema(s) {', '.join(unknown)}; known: {', '.join(modules)}"
        )
    empty = [parent for parent in upstream if not tables.get(parent)]
    if empty:
        raise ValueError(f"upstream schema(s) {', '.join(empty)} define no table to point to")
    role = role or ("analysis" if upstream else "acquisition")
    schema = {"name": name, "upstream": list(upstream), "description": description, "role": role}
    table = table_class(name)
    if upstream:
        targets = [f"{parent}.{tables[parent][-1]}" for parent in upstream]
        summary = description or f"The {name} schema: {ROLE_SUMMARY[role]}."
        module = HEAD.substitute(
            docstring=docstring(summary),
            imports=f"import datajoint as dj\n\n{import_statement(upstream)}\n",
            role=role,
        ) + ADDED.substitute(
            table=table,
            foreign_keys="\n".join(f"    -> {target}" for target in targets),
            upstream_tables=list_of(" " * 8, "upstream", targets),
        )
        test = TEST_HEAD.substitute(
            name=name, imports="", import_line=import_line(package_dir.name, name)
        ) + TEST_ADDED.substitute(
            lower=name, rows_line=assignment("    ", "rows", f"{name}.{table}().to_dicts()")
        )
    else:
        plan = [schema]
        kinds = {name: "entity"}
        module = module_source(schema, {name: table}, kinds, blob)
        test = test_source(schema, {name: table}, kinds, package_dir.name)
    init = replace_assignment(
        sources["init"], "MODULES", python_literal("MODULES", [*modules, name], tuple_of_names=True)
    )
    versions = literal(find_assignment(sources["version"], "SCHEMA_VERSIONS"))
    updated = {
        paths["init"]: with_module_import(init, name),
        paths["version"]: replace_assignment(
            sources["version"],
            "SCHEMA_VERSIONS",
            python_literal("SCHEMA_VERSIONS", {**versions, name: FIRST_VERSION}),
        ),
        package_dir / f"{name}.py": module,
        tests_dir / f"test_{name}.py": test,
    }
    if not upstream:  # a new root needs sample rows for its test, in the first pass
        sample = sources["sample"]
        entry = sample_entries(plan, {name: table}, kinds)
        marker = "SAMPLE_DATA: list[dict[type[dj.Table], Any]] = [\n    {\n"
        if marker not in sample:
            raise ValueError("sample_data.py: SAMPLE_DATA does not start with a pass to add to")
        sample = sample.replace(marker, marker + entry, 1)
        updated[paths["sample"]] = with_import(sample, name, package_dir.name)
    graph = {**tables_graph(package_dir, modules), name: tuple(m for m in modules if m in upstream)}
    for document in (project / "README.md", project / "docs" / "pipeline.md"):
        if document.is_file():
            updated[document] = with_diagram(document.read_text(encoding="utf-8"), graph)
    answers = project / ".cruft.json"
    if answers.is_file():
        updated[answers] = with_cruft_schema(answers.read_text(encoding="utf-8"), schema)
    for path, text in updated.items():
        path.write_text(text, encoding="utf-8")
    return [package_dir / f"{name}.py", tests_dir / f"test_{name}.py"]


def tables_graph(package_dir: Path, modules: list[str]) -> dict[str, tuple[str, ...]]:
    """The current schema graph, read from the modules' relative imports."""
    graph = {}
    for module in modules:
        path = package_dir / f"{module}.py"
        imported = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module} if node.module else {a.name for a in node.names}
        graph[module] = tuple(other for other in modules if other in imported)
    return graph


def with_cruft_schema(text: str, schema: dict) -> str:
    """.cruft.json with the new schema appended to its `schemas` answer (either form)."""
    answers = json.loads(text)
    context = answers.get("context", {}).get("cookiecutter", {})
    spec = context.get("schemas")
    if isinstance(spec, dict):
        spec[schema["name"]] = {
            key: value
            for key, value in (
                ("upstream", schema["upstream"]),
                ("description", schema["description"]),
                ("role", schema["role"]),
            )
            if value
        }
    elif isinstance(spec, str):
        entry = f"{schema['name']} [{schema['role']}]"
        if schema["upstream"]:
            entry += f" <- {', '.join(schema['upstream'])}"
        context["schemas"] = f"{spec.rstrip().rstrip(';')}; {entry}"
    else:
        return text
    return json.dumps(answers, indent=2, ensure_ascii=False) + "\n"


def refresh_diagrams(project: Path, pipeline: dict[str, tuple[str, ...]]) -> None:
    """Bring the pipeline diagrams of README.md and docs/pipeline.md up to date."""
    for document in (project / "README.md", project / "docs" / "pipeline.md"):
        if document.is_file():
            text = document.read_text(encoding="utf-8")
            document.write_text(with_diagram(text, pipeline), encoding="utf-8")


if __name__ == "__main__":  # python -m <package>.toolkit.scaffold: redraw the diagrams
    import importlib

    lab = str(__spec__.parent).rpartition(".")[0]  # type: ignore[name-defined]
    package = importlib.import_module(lab)
    refresh_diagrams(Path(str(package.__file__)).resolve().parents[2], package.pipeline.graph)
