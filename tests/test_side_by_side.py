"""Two generated projects installed in one environment keep their own toolkit.

The toolkit is vendored inside each project's package (`<package>/toolkit`), so a lab that
installs two pipelines side by side (or one made from an older template) runs each with the
toolkit its own repository holds: neither install overwrites the other's copy.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import clean_environment, install

pytestmark = pytest.mark.slow


def bake(cookies_session, package: str, name: str) -> Path:
    result = cookies_session.bake(extra_context={"project_name": name, "package_name": package})
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def test_two_projects_in_one_environment_keep_their_own_toolkit(cookies_session, project_env):
    first = bake(cookies_session, "sidea", "Side A")
    second = bake(cookies_session, "sideb", "Side B")
    # The second project holds an older (here: edited) toolkit, as a lab's other repository may.
    worker = second / "src" / "sideb" / "toolkit" / "worker.py"
    worker.write_text(worker.read_text() + '\nMARK = "older"\n')
    install(project_env, first)
    install(project_env, second)
    python = str(project_env / "bin" / "python")
    probe = (
        "import importlib, sys; "
        "m = importlib.import_module(sys.argv[1] + '.toolkit.worker'); "
        "print(m.__file__, getattr(m, 'MARK', '-'))"
    )
    seen = {}
    for project, package in ((first, "sidea"), (second, "sideb")):
        result = subprocess.run(
            [python, "-c", probe, package],
            env=clean_environment(),
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
        )
        path, mark = result.stdout.split()
        assert Path(path).resolve().is_relative_to(project.resolve())
        seen[package] = mark
        names = subprocess.run(
            [python, "-m", package, "names"],
            env=clean_environment(**{f"{package.upper()}_SCHEMA_PREFIX": "dev_x_"}),
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert names.returncode == 0, names.stderr
        assert "dev_x_subject" in names.stdout
    assert seen == {"sidea": "-", "sideb": "older"}
