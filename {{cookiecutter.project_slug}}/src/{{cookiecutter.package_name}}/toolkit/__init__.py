"""The operations toolkit of a DataJoint 2.x pipeline: command line, worker, status and
checks, access, backups, dev-db, dashboard and metrics, alerts, diagrams, add-schema.

It comes from the project template and is replaced as a whole by template updates:
do not edit it. It knows nothing of the pipeline until the lab's package hands it
one, as DataJoint Elements receive theirs:

    pipeline = Pipeline(MODULES, production_prefix="lab_", settings_prefix="WORKFLOW")
    toolkit.cli.main(pipeline, ["status"])      # python -m <package> status
    toolkit.worker.main(pipeline, ["--loop", "60"])

The same folder is the `dj-pipeline-toolkit` wheel, for packages not made from the
template: `dj-toolkit --pipeline <package> status` (see __main__.py).
"""

from .project import Pipeline, PipelineError, pipeline, short_name, tables, with_parts

#: The toolkit's version: the dj-pipeline-toolkit wheel's (toolkit/pyproject.toml reads it).
__version__ = "0.1.0"

__all__ = ["Pipeline", "PipelineError", "pipeline", "short_name", "tables", "with_parts"]
