"""Work around a known problem of the DataJoint release this project pins.

DataJoint 2.3.5 keeps the metadata of values in an object store (``<blob@store>``,
``object@store``) in a JSON column. MariaDB reports JSON columns as ``longtext``,
so DataJoint does not serialise that metadata on insert and the driver fails with
"dict can not be used as parameter". Marking those columns as JSON again fixes it;
on MySQL and PostgreSQL the flag is already set and nothing changes.
"""

from datajoint import heading
from datajoint.codecs import resolve_dtype

_init_from_database = heading.Heading._init_from_database


def _mark_json_codec_columns(self) -> None:
    _init_from_database(self)
    for name, attr in self._attributes.items():
        if attr.codec is None or attr.json:
            continue
        spec = f"<{attr.codec.name}@{attr.store}>" if attr.store else f"<{attr.codec.name}>"
        if resolve_dtype(spec)[0].lower() == "json":
            self._attributes[name] = attr._replace(json=True)


heading.Heading._init_from_database = _mark_json_codec_columns
