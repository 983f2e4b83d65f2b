"""The rendered project's .secrets/ folder is for its owner alone."""

import stat
from pathlib import Path


def test_rendered_secrets_folder_is_private(cookies):
    result = cookies.bake(extra_context={"package_name": "secretive"})
    assert result.exit_code == 0, result.exception
    secrets = Path(result.project_path) / ".secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    files = list(secrets.iterdir())
    assert files  # the README that says what goes there
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
