"""The whole pipeline declares in order, follows its imports, populates and is complete.

These tests come from the project template and find the tables by themselves, so they
keep working when you replace the starter tables; test_<schema>.py files are yours.
"""

from pathlib import Path

import datajoint as dj
import pytest

from {{ cookiecutter.package_name }} import SCHEMA_VERSIONS
from {{ cookiecutter.package_name }} import pipeline as lab_pipeline
from {{ cookiecutter.package_name }}.toolkit import scaffold, short_name, tables, with_parts

PIPELINE = lab_pipeline.graph  # each schema's upstream schemas, from the modules' imports

PROJECT = Path(__file__).parents[1]


def test_every_schema_declares_upstream_first(pipeline):
    names = [short_name(module) for module in pipeline.modules]
    for position, name in enumerate(names):
        late = [parent for parent in PIPELINE[name] if parent not in names[:position]]
        assert not late, f"MODULES lists {name} before its upstream {', '.join(late)}"
    for module in pipeline.modules:
        assert module.schema.exists
        assert module.schema.list_tables()


def schemas_of(names, prefix: dict[str, str]) -> set[str]:
    """Schemas (short names) of the pipeline among full table names."""
    databases = {name.replace("`", "").replace('"', "").split(".")[0] for name in names}
    return {prefix[database] for database in databases if database in prefix}


def depends_on(table) -> set[str]:
    """Full names of the tables a table depends on: its ancestors and, behind each merge
    table among them, the ancestors of its Part tables (the sources the merge registers)."""
    found: set[str] = set()
    todo = [table]
    while todo:
        for ancestor in todo.pop().ancestors(as_objects=True):
            if ancestor.full_table_name not in found:
                found.add(ancestor.full_table_name)
                todo.extend(ancestor.parts(as_objects=True))
    return found


def foreign_key_schemas(module, *, through_others: bool = False) -> set[str]:
    """Schemas (short names) the tables of a module point to with foreign keys, directly or
    (through_others) through the tables of other schemas as well."""
    prefix = {name: short for short, name in lab_pipeline.schema_names().items()}
    pointed = set()
    for table in tables(module):
        for part in with_parts(table):
            found = depends_on(part()) if through_others else part().parents(as_objects=False)
            pointed |= schemas_of(found, prefix)
    return pointed - {short_name(module)}


def test_imports_match_the_foreign_keys(pipeline):
    """PIPELINE comes from the modules' imports: each must be one the tables depend on.

    A module imports every schema its foreign keys point to, and may import one its tables
    depend on through others (a make() that reads a source table behind a merge table).
    """
    for module in pipeline.modules:
        name = short_name(module)
        pointed = foreign_key_schemas(module)
        assert pointed <= set(PIPELINE[name]), f"{name} points to {pointed} without importing"
        unused = set(PIPELINE[name]) - foreign_key_schemas(module, through_others=True)
        assert not unused, f"{name} imports {', '.join(sorted(unused))} but depends on none of it"


def test_the_diagrams_follow_the_pipeline():
    for document in (PROJECT / "README.md", PROJECT / "docs" / "pipeline.md"):
        text = document.read_text(encoding="utf-8")
        redraw = "python -m {{ cookiecutter.package_name }}.toolkit.scaffold"
        assert scaffold.with_diagram(text, PIPELINE) == text, f"{document.name}: run {redraw}"


def test_schema_names_carry_the_prefix(pipeline):
    names = pipeline.schema_names("dev_")
    assert list(names) == [short_name(module) for module in pipeline.modules]
    assert all(name == f"dev_{module}" for module, name in names.items())


def test_every_auto_table_gets_rows_from_the_sample_data(pipeline):
    for table in pipeline.auto_tables():
        remaining, total = table().progress()
        assert total > 0, f"{table.__name__}: the sample data give it no key to populate"
        assert remaining == 0, table.__name__


def test_schema_versions_cover_every_schema():
    assert list(SCHEMA_VERSIONS) == list(lab_pipeline.schema_names())


def test_a_table_used_before_activate_names_the_call():
    schema = dj.Schema()

    @schema
    class Unbound(dj.Manual):
        definition = """
        unbound_id : int32
        """

    message = r"call {{ cookiecutter.package_name }}\.activate\(\) first"
    with pytest.raises(dj.DataJointError, match=message):
        len(Unbound())
