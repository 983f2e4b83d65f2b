"""The pipeline as the toolkit sees it: the lab's schema modules and its prefix rule.

The lab's package builds one `Pipeline` from its modules (upstream first) and hands it
to the toolkit, as DataJoint Elements receive theirs through `activate()`; the
toolkit's commands then reach it through `pipeline`, which stands for the one most
recently built. The schema graph is derived from the modules' imports.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import datajoint as dj
from datajoint.expression import QueryExpression
from datajoint.settings import find_config_file
from dotenv import dotenv_values

from . import _compat, devdb  # noqa: F401 - _compat fixes stored values on MariaDB
from .utils import prepare_stores

#: A schema module's ROLE: who may write there (access.py), where the dashboard shows it.
ROLES = ("acquisition", "processing", "analysis")


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


def upstream_of(module: ModuleType, modules: Iterable[ModuleType]) -> tuple[str, ...]:
    """The schema modules a module imports, itself or through one of their tables."""
    imported = {
        id(value if isinstance(value, ModuleType) else sys.modules.get(value.__module__))
        for value in vars(module).values()
        if isinstance(value, (ModuleType, type))
    }
    return tuple(
        short_name(other) for other in modules if other is not module and id(other) in imported
    )


class PipelineError(ValueError):
    """The modules handed to Pipeline() do not make a pipeline."""


class Pipeline:
    """A lab's pipeline: its schema modules, upstream first, and its schema-name rule.

    The schema set in force is named by the environment variable
    `<settings_prefix>_SCHEMA_PREFIX` (or the project's .env); production's prefix must
    be named there, never a default: with nothing set, the shared development set
    `dev_<production_prefix>` is used. Tests take throwaway prefixes that start with
    `<settings_prefix>_TEST_PREFIX` (default `test_`).
    """

    def __init__(
        self,
        modules: Iterable[ModuleType],
        *,
        production_prefix: str,
        settings_prefix: str,
        version: str = "0",
        schema_versions: Mapping[str, str] | None = None,
        name: str = "",
    ) -> None:
        self.modules = tuple(modules)
        if not self.modules:
            raise PipelineError("Pipeline() needs at least one schema module")
        for module in self.modules:
            if not isinstance(getattr(module, "schema", None), dj.Schema):
                raise PipelineError(
                    f"{module.__name__} has no `schema = dj.Schema()`: each schema module needs one"
                )
        #: The lab's package, e.g. 'workflow' (`python -m workflow ...`).
        self.package = self.modules[0].__name__.rpartition(".")[0] or self.modules[0].__name__
        self.name = name or self.package
        #: The commands the toolkit's hints name (the standalone toolkit sets its own).
        self.command = f"python -m {self.package}"
        self.worker_command = f"python -m {self.package}.worker"
        self.production_prefix = production_prefix
        self.development_prefix = "dev_" + production_prefix
        self.prefix_variable = f"{settings_prefix}_SCHEMA_PREFIX"
        self.test_prefix_variable = f"{settings_prefix}_TEST_PREFIX"
        self.version = version
        self.schema_versions = dict(schema_versions or {})
        #: Each schema's upstream schemas, from the imports of its module: the graph.
        self.graph = {
            short_name(module): upstream_of(module, self.modules) for module in self.modules
        }
        seen: set[str] = set()
        for schema, upstream in self.graph.items():
            later = [name for name in upstream if name not in seen]
            if later:
                raise PipelineError(
                    f"{schema} imports {', '.join(later)}, listed after it: list the schema "
                    "modules upstream first"
                )
            seen.add(schema)
        #: Each schema's role in the pipeline: acquisition, processing or analysis.
        self.roles = {short_name(module): self._role_of(module) for module in self.modules}
        use(self)

    def __repr__(self) -> str:
        return f"Pipeline({self.package!r}, schemas={list(self.graph)})"

    def _role_of(self, module: ModuleType) -> str:
        """A module's ROLE, else: acquisition for hand-entered and imported data, processing
        for computed tables that feed others, analysis for the final ones."""
        role = getattr(module, "ROLE", "")
        if role:
            if role not in ROLES:
                raise PipelineError(
                    f"{module.__name__}.ROLE = {role!r}: use one of {', '.join(ROLES)}"
                )
            return role
        if not any(issubclass(table, dj.Computed) for table in tables(module)):
            return "acquisition"
        name = short_name(module)
        return "processing" if any(name in up for up in self.graph.values()) else "analysis"

    @staticmethod
    def setting(variable: str) -> str | None:
        """A setting of the project: from the environment, else from the project's .env
        file (next to datajoint.json). The environment wins."""
        if variable in os.environ:
            return os.environ[variable]
        config_file = find_config_file()
        folder = config_file.parent if config_file else Path.cwd()
        return dotenv_values(folder / ".env").get(variable)

    def schema_prefix(self) -> str:
        """The prefix in force: the prefix variable from the environment or the project's
        .env, else the shared development prefix. Production is never the default."""
        value = self.setting(self.prefix_variable)
        return self.development_prefix if value is None else value

    def test_prefix_start(self) -> str:
        """How the tests' throwaway prefixes start (default `test_`)."""
        return self.setting(self.test_prefix_variable) or "test_"

    def throwaway_prefix(self) -> str:
        """A fresh prefix for one test run: the test prefix's start, then a random part. A
        database user with rights on `alice\\_%` only sets it to `alice_test_`."""
        return self.test_prefix_start() + secrets.token_hex(3) + "_"

    def prefix_kind(self, prefix: str | None = None) -> str:
        """What a schema set is: production, development (dev_...), test or personal."""
        prefix = self.schema_prefix() if prefix is None else prefix
        if prefix == self.production_prefix:
            return "production"
        if prefix.startswith("dev_"):
            return "development"
        return "test" if prefix.startswith(("test_", self.test_prefix_start())) else "personal"

    def schema_names(self, prefix: str | None = None) -> dict[str, str]:
        """Database schema name of every module, in dependency order."""
        prefix = self.schema_prefix() if prefix is None else prefix
        return {short_name(module): prefix + short_name(module) for module in self.modules}

    def activate(
        self, prefix: str | None = None, *, connection=None, create: bool = True
    ) -> dict[str, str]:
        """Bind every schema module to its database schema, creating what is missing.

        Schemas are activated upstream first, so each table's foreign keys can be
        declared. With create=False nothing is created: only the schemas that exist are
        bound, and missing tables stay undeclared (``Table.is_declared`` is False).
        Returns the module-to-schema-name mapping of the schemas that were bound.
        """
        prepare_stores()
        names = self.schema_names(prefix)
        if not create:
            existing = set(dj.list_schemas(connection=connection))
            names = {module: name for module, name in names.items() if name in existing}
        for module in self.modules:
            if short_name(module) in names:
                module.schema.activate(
                    names[short_name(module)],
                    connection=connection,
                    # None: DataJoint's own setting decides (DJ_CREATE_TABLES=false in production).
                    create_schema=None if create else False,
                    create_tables=None if create else False,
                )
        return names

    def auto_tables(self) -> list[type[dj.Table]]:
        """Every Imported and Computed table, in the order populate must run them."""
        return [
            table
            for module in self.modules
            for table in tables(module)
            if issubclass(table, (dj.Imported, dj.Computed))
        ]

    def insert_sample_data(self, passes: Iterable[Mapping[Any, Any]], *, populate: bool = True):
        """Enter sample data pass by pass, populating after each (a later pass may need
        computed results). A pass maps tables to rows, or to a function returning them.

        Rows already present are kept, so running it again changes nothing.
        """
        for step in passes:
            for table, rows in step.items():
                table.insert(rows() if callable(rows) else rows, skip_duplicates=True)
            if populate:
                for table in self.auto_tables():
                    table.populate(reserve_jobs=True)


_current: Pipeline | None = None


def use(pipeline_: Pipeline) -> None:
    """Make `pipeline_` the one the toolkit's commands act on (Pipeline() calls it)."""
    global _current
    _current = pipeline_


class _Current:
    """Stands for the pipeline most recently built: `pipeline.activate()`, `pipeline.modules`."""

    def __getattr__(self, name: str) -> Any:
        if _current is None:
            raise RuntimeError(
                "no pipeline: build one with toolkit.Pipeline(modules, ...) (the lab's "
                "package does, in its __init__.py) before using the toolkit"
            )
        return getattr(_current, name)

    def __repr__(self) -> str:
        return repr(_current)


#: The pipeline the toolkit acts on (the one most recently built).
pipeline: Any = _Current()


def _explain_missing_activation() -> None:
    """Replace DataJoint's bare AssertionError on a table used before activate() by a
    message that names the call to make."""
    connection = QueryExpression.connection

    def checked(self):
        if self._connection is None:
            package = _current.package if _current else "<package>"
            raise dj.DataJointError(
                f"{type(self).__name__} is not bound to a database yet: call "
                f"{package}.activate() first (it activates every schema, upstream first)"
            )
        return connection.fget(self)

    QueryExpression.connection = property(checked)


devdb.use_if_unconfigured()  # no database user configured: the running dev-db, if any
_explain_missing_activation()
