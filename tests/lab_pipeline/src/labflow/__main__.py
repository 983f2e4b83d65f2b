"""`python -m labflow`: the pipeline's command line (the toolkit's; see --help)."""

import sys

from . import pipeline
from .toolkit import cli


def main() -> int:
    """The command line, for this pipeline (also the `lab-pipeline` command)."""
    return cli.main(pipeline)


if __name__ == "__main__":
    sys.exit(main())
