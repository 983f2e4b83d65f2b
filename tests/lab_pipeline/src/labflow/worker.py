"""`python -m labflow.worker`: populate the pipeline's tables (the toolkit's worker; see --help)."""

import sys

from . import pipeline
from .toolkit import worker


def main() -> int:
    """The worker, for this pipeline (also the `lab-pipeline-worker` command)."""
    return worker.main(pipeline)


if __name__ == "__main__":
    sys.exit(main())
