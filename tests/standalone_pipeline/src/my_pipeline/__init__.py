"""My Pipeline: subjects, their sessions and the sessions' recordings."""

from dj_pipeline_toolkit import Pipeline

from . import subject  # no dependencies
from . import session  # depends on subject
from . import ephys  # depends on session
from .version import SCHEMA_VERSIONS, __version__

pipeline = Pipeline(
    (subject, session, ephys),
    production_prefix="my_pipeline_",
    settings_prefix="MY_PIPELINE",  # MY_PIPELINE_SCHEMA_PREFIX names the schema set in use
    version=__version__,
    schema_versions=SCHEMA_VERSIONS,
)
