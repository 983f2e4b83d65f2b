"""Version of the package and of each schema's table definitions."""

__version__ = "2.4.0"

SCHEMA_VERSIONS = {
    "lab": "1.2.0",
    "subject": "1.1.0",
    "session": "1.3.0",
    "ephys": "2.0.1",
    "imaging": "1.0.0",
    "activity": "1.0.0",
    "analysis": "0.3.0",
}
