"""The whole pipeline declares, populates and is complete."""

from {{ cookiecutter.package_name }} import SCHEMA_VERSIONS, schema_names


def test_every_schema_is_declared(pipeline):
    for module in pipeline.MODULES:
        assert module.schema.exists
        assert module.schema.list_tables()


def test_schema_names_carry_the_prefix(pipeline):
    names = pipeline.schema_names("dev_")
    assert list(names) == [pipeline.short_name(module) for module in pipeline.MODULES]
    assert all(name == f"dev_{module}" for module, name in names.items())


def test_every_auto_table_is_complete(pipeline):
    for table in pipeline.auto_tables():
        remaining, total = table().progress()
        assert total > 0, table.__name__
        assert remaining == 0, table.__name__


def test_schema_versions_cover_every_schema():
    assert list(SCHEMA_VERSIONS) == list(schema_names())
