"""Lab Pipeline: the lab's DataJoint pipeline, one module per database schema.

Import every schema module here, upstream first, and list it in MODULES: the
toolkit (the `toolkit` folder, the template's) activates and populates them in
this order and derives the schema graph from the modules' own imports.
"""

from .toolkit import Pipeline
from .version import SCHEMA_VERSIONS, __version__

# The schema modules, upstream first like MODULES (isort would sort them).
# isort: off
from . import lab
from . import subject
from . import session
from . import ephys
from . import imaging
from . import activity
from . import analysis

MODULES = (lab, subject, session, ephys, imaging, activity, analysis)

#: The pipeline as the toolkit (command line, worker, dashboard) receives it.
pipeline = Pipeline(
    MODULES,
    name="Lab Pipeline",
    production_prefix="labflow_",  # production's schema names start with it
    settings_prefix="LABFLOW",  # LABFLOW_SCHEMA_PREFIX: the schemas in force
    version=__version__,
    schema_versions=SCHEMA_VERSIONS,
)
activate = pipeline.activate
