"""The whole pipeline declares, populates and is complete."""

import {{ cookiecutter.package_name }} as pipeline_package


def test_every_schema_is_declared(pipeline):
    for module in pipeline_package.MODULES:
        assert module.schema.exists
        assert module.schema.list_tables()


def test_schema_names_carry_the_prefix(pipeline):
    names = pipeline_package.schema_names("dev_")
    assert list(names) == [module.__name__.rpartition(".")[2] for module in pipeline_package.MODULES]
    assert all(name.startswith("dev_") for name in names.values())


def test_every_auto_table_is_complete(pipeline):
    for table in pipeline_package.auto_tables():
        remaining, total = table().progress()
        assert (remaining, total > 0) == (0, True), table.__name__


def test_schema_versions_cover_every_schema():
    assert set(pipeline_package.SCHEMA_VERSIONS) == set(pipeline_package.schema_names())
