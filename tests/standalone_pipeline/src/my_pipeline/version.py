__version__ = "1.0.0"

SCHEMA_VERSIONS = {
    "subject": "1.0.0",
    "session": "1.0.0",
    "ephys": "1.0.0",
}
