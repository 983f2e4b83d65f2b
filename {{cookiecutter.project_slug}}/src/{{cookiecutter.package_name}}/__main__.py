"""`python -m {{ cookiecutter.package_name }}`: the pipeline's command line (the toolkit's; see --help)."""

import sys

from . import pipeline
from .toolkit import cli


def main() -> int:
    """The command line, for this pipeline (also the `{{ cookiecutter.project_slug }}` command)."""
    return cli.main(pipeline)


if __name__ == "__main__":
    sys.exit(main())
