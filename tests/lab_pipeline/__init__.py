"""The lab's pipeline: one module per database schema, upstream first."""

from . import activity, analysis, ephys, imaging, lab, session, subject

MODULES = (lab, subject, session, ephys, imaging, activity, analysis)
