"""An s3 render's laptop steps work as its README writes them.

The README's "On a laptop without a database server" steps, run in order on an s3 render:
the dev-db, the development prefix in .env, and the object store as the README's own
`export DJ_STORES=...` lines give it (the laptop has no credentials for the lab's bucket):
a folder of the project, or the compose file's MinIO on localhost:9000 -- here a local S3
server (moto, of the dev extra) in MinIO's place, its port and keys filled in. Each time the
notebooks run as `jupyter nbconvert --execute` runs them: each on its own, in its folder,
with the shell's environment, and the objects land in the store the README chose.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_environment, free_port, install
from cookiecutter.main import cookiecutter

pytestmark = pytest.mark.slow

PACKAGE = "lap"
# `jupyter nbconvert --to notebook --execute notebooks/*.ipynb`, without nbconvert itself.
RUN_NOTEBOOKS = """\
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

for path in sorted(Path("notebooks").glob("*.ipynb")):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, resources={"metadata": {"path": "notebooks"}})
    try:
        client.execute()
    except CellExecutionError as error:
        sys.exit(f"{path.name}: {error}")
    print(path.name, "ran")
"""


def laptop_steps(readme: str) -> tuple[str, dict[str, dict]]:
    """The .env line of step 3, and the stores the laptop section gives, by protocol."""
    section = readme.split("## On a laptop without a database server", 1)[1].split("\n## ", 1)[0]
    dotenv = re.search(r"`echo (\w+=\w+) > \.env`", section)
    lines = re.findall(r"^\s*export DJ_STORES='(.+)'$", section, flags=re.MULTILINE)
    assert dotenv and lines, "the laptop steps no longer say how to set up .env and the store"
    stores = {json.loads(line)["main"]["protocol"]: line for line in lines}
    assert set(stores) == {"file", "s3"}, "a folder and MinIO, as the README offers"
    return dotenv[1], stores


# Straight to loopback, whatever proxy the environment names.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def local_s3(python: str, port: int) -> subprocess.Popen:
    """moto's S3 server on loopback, in MinIO's place."""
    server = subprocess.Popen(
        [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            LOOPBACK.open(f"http://127.0.0.1:{port}/", timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise AssertionError("the local S3 server did not start")


def bucket_keys(port: int, bucket: str) -> list[str]:
    """The object keys of a bucket of the local S3 server (moto answers unsigned requests)."""
    with LOOPBACK.open(f"http://127.0.0.1:{port}/{bucket}", timeout=10) as answer:
        listing = answer.read().decode()
    return re.findall(r"<Key>([^<]+)</Key>", listing)


def test_the_readme_laptop_steps_run_the_notebooks_of_an_s3_render(project_env):
    # Outside pytest's temporary root, for the same reason as conftest.project_env (the
    # dev-db's server runs as an unprivileged user when we are root).
    folder = Path(tempfile.mkdtemp(prefix="dj-template-s3-laptop-"))
    project = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"object_store": "s3", "package_name": PACKAGE},
            output_dir=str(folder),
        )
    )
    install(project_env, project)
    dotenv, stores = laptop_steps((project / "README.md").read_text(encoding="utf-8"))
    python = str(project_env / "bin" / "python")
    port = free_port()
    minio = json.loads(stores["s3"])["main"]
    # What the README leaves to the reader: MinIO's address here, and docker/.env's keys.
    stores["s3"] = (
        stores["s3"]
        .replace("localhost:9000", f"127.0.0.1:{port}")
        .replace("<MINIO_ROOT_USER>", "laptop")
        .replace("<MINIO_ROOT_PASSWORD>", "laptop-secret")
    )
    assert minio["secure"] is False and minio["endpoint"] == "localhost:9000"

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, *args],
            cwd=project,
            env=clean_environment(**env),  # no database user: the dev-db is used
            capture_output=True,
            text=True,
            check=False,
        )

    def laptop(suffix: str, stores: str) -> str:
        """Steps 3 to 5 with one store: .env, declare, the notebooks, status."""
        (project / ".env").write_text(dotenv + suffix + "\n")
        outputs = []
        for step in (["-m", PACKAGE, "declare"], ["-c", RUN_NOTEBOOKS], ["-m", PACKAGE, "status"]):
            done = run(*step, DJ_STORES=stores)
            assert done.returncode == 0, f"{step}: {(done.stdout + done.stderr)[-3000:]}"
            outputs.append(done.stdout)
        return outputs[1]

    server = local_s3(python, port)
    try:
        started = run("-m", PACKAGE, "dev-db", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        LOOPBACK.open(
            urllib.request.Request(f"http://127.0.0.1:{port}/{minio['bucket']}", method="PUT")
        ).close()  # the compose file's create-bucket service
        ran = {protocol: laptop(f"{protocol}_", stores[protocol]) for protocol in ("file", "s3")}
        folder_objects = [
            path
            for path in (project / json.loads(stores["file"])["main"]["location"]).rglob("*")
            if path.is_file()
        ]
        s3_objects = bucket_keys(port, minio["bucket"])
    finally:
        run("-m", PACKAGE, "dev-db", "stop")
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    for output in ran.values():
        assert output.split() == ["01-data-entry.ipynb", "ran", "02-analysis.ipynb", "ran"]
    assert folder_objects, "no object in the folder store"
    assert s3_objects and all(key.startswith(minio["location"] + "/") for key in s3_objects)


def test_the_folder_is_kept_out_of_git(tmp_path):
    project = Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"object_store": "s3"},
            output_dir=str(tmp_path),
        )
    )
    _, stores = laptop_steps((project / "README.md").read_text(encoding="utf-8"))
    location = json.loads(stores["file"])["main"]["location"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"{location}/_hash/x"], cwd=project, check=False
    )
    assert ignored.returncode == 0, f"{location} is not gitignored"
