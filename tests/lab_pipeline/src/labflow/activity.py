"""Neural activity from every modality, in one merge table (the Spyglass/Elements pattern).

`ActivityOutput` gives each upstream result one `merge_id`; its Part tables, one per
source, point to the result tables of other schemas. Downstream analyses depend on the
merge table only, so a new source is a new Part table, not a change to every analysis.
"""

import hashlib

import datajoint as dj

from . import ephys, imaging

schema = dj.Schema()


def merge_id(source: str, key: dict) -> str:
    """A stable id for one upstream result (a uuid column fails on PostgreSQL in 2.3.5)."""
    text = source + repr(sorted(key.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:32]


@schema
class ActivityOutput(dj.Manual):
    definition = """
    merge_id : char(32)
    ---
    source : varchar(32)  # the Part table holding the entry
    """

    class Spikes(dj.Part):
        definition = """
        -> master
        ---
        -> ephys.Clustering
        """

    class CalciumTraces(dj.Part):
        definition = """
        -> master
        ---
        -> imaging.Segmentation
        """

    @classmethod
    def entries(cls, part: type[dj.Part], upstream: type[dj.Table]) -> tuple[list, list]:
        """Master and part rows registering every row of `upstream` under `part`."""
        keys = upstream.keys()
        ids = [merge_id(part.__name__, key) for key in keys]
        masters = [{"merge_id": i, "source": part.__name__} for i in ids]
        return masters, [{"merge_id": i, **key} for i, key in zip(ids, keys, strict=True)]
