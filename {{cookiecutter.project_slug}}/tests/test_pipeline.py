"""The whole pipeline declares in order, follows its imports, populates and is complete.

These tests come from the project template and find the tables by themselves, so they
keep working when you replace the starter tables; test_<schema>.py files are yours.
"""

from pathlib import Path

import datajoint as dj
import pytest

from {{ cookiecutter.package_name }} import (
    PIPELINE,
    SCHEMA_VERSIONS,
    scaffold,
    schema_names,
    tables,
    with_parts,
)

PROJECT = Path(__file__).parents[1]


def test_every_schema_declares_upstream_first(pipeline):
    names = [pipeline.short_name(module) for module in pipeline.MODULES]
    for position, name in enumerate(names):
        late = [parent for parent in PIPELINE[name] if parent not in names[:position]]
        assert not late, f"MODULES lists {name} before its upstream {', '.join(late)}"
    for module in pipeline.MODULES:
        assert module.schema.exists
        assert module.schema.list_tables()


def foreign_key_schemas(module) -> set[str]:
    """Schemas (short names) the tables of a module point to with foreign keys."""
    prefix = {name: short for short, name in schema_names().items()}
    parents = set()
    for table in tables(module):
        for part in with_parts(table):
            for parent in part().parents(as_objects=False):
                database = parent.replace("`", "").replace('"', "").split(".")[0]
                if database in prefix:
                    parents.add(prefix[database])
    return parents - {pipeline_name(module)}


def pipeline_name(module) -> str:
    return module.__name__.rpartition(".")[2]


def test_imports_match_the_foreign_keys(pipeline):
    """PIPELINE comes from the modules' imports: each must be used by a foreign key."""
    for module in pipeline.MODULES:
        name = pipeline_name(module)
        pointed = foreign_key_schemas(module)
        assert pointed <= set(PIPELINE[name]), f"{name} points to {pointed} without importing"
        unused = set(PIPELINE[name]) - pointed
        assert not unused, f"{name} imports {', '.join(sorted(unused))} but no foreign key uses it"


def test_the_diagrams_follow_the_pipeline():
    for document in (PROJECT / "README.md", PROJECT / "docs" / "pipeline.md"):
        text = document.read_text(encoding="utf-8")
        redraw = "python -m {{ cookiecutter.package_name }}.scaffold"
        assert scaffold.with_diagram(text, PIPELINE) == text, f"{document.name}: run {redraw}"


def test_schema_names_carry_the_prefix(pipeline):
    names = pipeline.schema_names("dev_")
    assert list(names) == [pipeline.short_name(module) for module in pipeline.MODULES]
    assert all(name == f"dev_{module}" for module, name in names.items())


def test_every_auto_table_gets_rows_from_the_sample_data(pipeline):
    for table in pipeline.auto_tables():
        remaining, total = table().progress()
        assert total > 0, f"{table.__name__}: the sample data give it no key to populate"
        assert remaining == 0, table.__name__


def test_schema_versions_cover_every_schema():
    assert list(SCHEMA_VERSIONS) == list(schema_names())


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
