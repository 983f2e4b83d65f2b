"""{{ (cookiecutter.project_name | tojson)[1:-1] }}: DataJoint pipeline package.

The pipeline itself (the schema modules, sample data and schema versions) is the
lab's and lives in the `pipeline` subpackage. This module comes from the project
template: it derives the schema graph from the modules' imports, and activate()
binds every schema to the database in dependency order (README, "Schema names").
"""

import os
import secrets
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import datajoint as dj
from datajoint.expression import QueryExpression
from datajoint.settings import find_config_file
from dotenv import dotenv_values

from . import _compat, devdb  # noqa: F401 - _compat fixes stored values on MariaDB
from .pipeline import MODULES
from .pipeline.version import SCHEMA_VERSIONS, __version__
from .utils import prepare_stores

#: Environment variable that selects the schema names (production, dev_, personal).
PREFIX_VARIABLE = "{{ cookiecutter.__prefix_variable }}"
#: Prefix of the production schema names: in force only when PREFIX_VARIABLE names it.
PRODUCTION_PREFIX = "{{ cookiecutter.schema_prefix }}"
#: Environment variable with the start of the tests' throwaway prefixes (default test_).
TEST_PREFIX_VARIABLE = "{{ cookiecutter.package_name | upper }}_TEST_PREFIX"
#: Prefix in force when nothing is configured: the shared development set.
DEVELOPMENT_PREFIX = "dev_" + PRODUCTION_PREFIX
ROLES = ("acquisition", "processing", "analysis")

devdb.use_if_unconfigured()  # no database user configured: the running dev-db, if any

__all__ = [
    "DEVELOPMENT_PREFIX",
    "MODULES",
    "PIPELINE",
    "SCHEMA_ROLES",
    "SCHEMA_VERSIONS",
    "__version__",
    "activate",
    "auto_tables",
    "insert_sample_data",
    "schema_names",
]


def short_name(module: ModuleType) -> str:
    """Name of a schema module without the package, e.g. 'subject'."""
    return module.__name__.rpartition(".")[2]


def tables(module: ModuleType) -> list[type[dj.Table]]:
    """The tables a schema module defines (not those it imports), in definition order."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, dj.Table)
        and not issubclass(value, dj.Part)
        and value.__module__ == module.__name__
    ]


def with_parts(table: type[dj.Table]) -> list[type[dj.Table]]:
    """A table and its Part tables."""
    parts = [getattr(table, name) for name in dir(table) if name[:1].isupper()]
    return [table] + [
        part for part in parts if isinstance(part, type) and issubclass(part, dj.Part)
    ]


def upstream_of(module: ModuleType) -> tuple[str, ...]:
    """The schema modules a module imports, itself or through one of their tables."""
    imported = {
        id(value if isinstance(value, ModuleType) else sys.modules.get(value.__module__))
        for value in vars(module).values()
        if isinstance(value, (ModuleType, type))
    }
    return tuple(
        short_name(other) for other in MODULES if other is not module and id(other) in imported
    )


#: Each schema's upstream schemas, from the imports of its module: the dependency graph.
PIPELINE = {short_name(module): upstream_of(module) for module in MODULES}


def role_of(module: ModuleType) -> str:
    """A module's ROLE, else: acquisition for hand-entered and imported data, processing
    for computed tables that feed others, analysis for the final ones."""
    role = getattr(module, "ROLE", "")
    if role:
        if role not in ROLES:
            raise ValueError(f"{module.__name__}.ROLE = {role!r}: use one of {', '.join(ROLES)}")
        return role
    if not any(issubclass(table, dj.Computed) for table in tables(module)):
        return "acquisition"
    name = short_name(module)
    return "processing" if any(name in parents for parents in PIPELINE.values()) else "analysis"


#: Each schema's role in the pipeline: acquisition, processing or analysis.
SCHEMA_ROLES = {short_name(module): role_of(module) for module in MODULES}


def project_setting(variable: str) -> str | None:
    """A setting of the project: from the environment, else from the project's .env file
    (next to datajoint.json). The environment wins."""
    if variable in os.environ:
        return os.environ[variable]
    config_file = find_config_file()
    return dotenv_values((config_file.parent if config_file else Path.cwd()) / ".env").get(variable)


def schema_prefix() -> str:
    """The prefix in force: ${{ cookiecutter.__prefix_variable }} from the environment or the project's .env,
    else the shared development prefix. Production is never the default: it must be named."""
    value = project_setting(PREFIX_VARIABLE)
    return DEVELOPMENT_PREFIX if value is None else value


def throwaway_prefix() -> str:
    """A fresh prefix for one test run: TEST_PREFIX_VARIABLE's value (default `test_`), then
    a random part. A database user with rights on `alice\\_%` only sets it to `alice_test_`
    (in the environment or .env)."""
    return (project_setting(TEST_PREFIX_VARIABLE) or "test_") + secrets.token_hex(3) + "_"


def prefix_kind(prefix: str | None = None) -> str:
    """What a schema set is: production, development (dev_...), test (test_...) or personal."""
    prefix = schema_prefix() if prefix is None else prefix
    if prefix == PRODUCTION_PREFIX:
        return "production"
    if prefix.startswith("dev_"):
        return "development"
    test_start = project_setting(TEST_PREFIX_VARIABLE) or "test_"
    return "test" if prefix.startswith(("test_", test_start)) else "personal"


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
                # None: DataJoint's own setting decides (DJ_CREATE_TABLES=false in production).
                create_schema=None if create else False,
                create_tables=None if create else False,
            )
    return names


def auto_tables() -> list[type[dj.Table]]:
    """Every Imported and Computed table, in the order populate must run them."""
    return [
        table
        for module in MODULES
        for table in tables(module)
        if issubclass(table, (dj.Imported, dj.Computed))
    ]


def insert_sample_data(*, populate: bool = True) -> None:
    """Enter the sample data pass by pass (pipeline/sample_data.py), populating after each.

    Rows already present are kept, so running it again changes nothing.
    """
    from .pipeline.sample_data import SAMPLE_DATA

    for step in SAMPLE_DATA:
        entries: dict[Any, Any] = step
        for table, rows in entries.items():
            table.insert(rows() if callable(rows) else rows, skip_duplicates=True)
        if populate:
            for table in auto_tables():
                table.populate(reserve_jobs=True)


def _explain_missing_activation() -> None:
    """Replace DataJoint's bare AssertionError on a table used before activate() by a
    message that names the call to make."""
    connection = QueryExpression.connection

    def checked(self):
        if self._connection is None:
            raise dj.DataJointError(
                f"{type(self).__name__} is not bound to a database yet: call "
                f"{__name__}.activate() first (it activates every schema, upstream first)"
            )
        return connection.fget(self)

    QueryExpression.connection = property(checked)


_explain_missing_activation()
