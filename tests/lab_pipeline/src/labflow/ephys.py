"""Extracellular electrophysiology: probes, insertions, recordings and spike sorting."""

import datajoint as dj
import numpy as np

from . import session

schema = dj.Schema()

SAMPLING_RATE = 30_000.0  # Hz


@schema
class ProbeType(dj.Lookup):
    definition = """
    probe_type : varchar(32)
    ---
    site_count : int16
    """
    contents = [
        {"probe_type": "neuropixels 1.0", "site_count": 8},
        {"probe_type": "tetrode", "site_count": 4},
    ]

    class Site(dj.Part):
        definition = """
        -> master
        site : int16
        ---
        x_coord : float32  # micrometres
        y_coord : float32  # micrometres
        """


@schema
class Probe(dj.Lookup):
    definition = """
    probe : varchar(32)  # serial number
    ---
    -> ProbeType
    probe_comment = "" : varchar(1000)
    """
    contents = [
        {"probe": "18194819302", "probe_type": "neuropixels 1.0", "probe_comment": ""},
        {"probe": "T-0042", "probe_type": "tetrode", "probe_comment": "re-gilded"},
    ]


@schema
class ProbeInsertion(dj.Manual):
    definition = """
    -> session.Session
    insertion_number : int16
    ---
    -> Probe
    depth = null : float32  # micrometres below the brain surface
    """


@schema
class EphysRecording(dj.Imported):
    definition = """
    -> ProbeInsertion
    ---
    sampling_rate : float64  # Hz
    recording_duration : float64  # seconds
    recorded_at = CURRENT_TIMESTAMP : datetime
    """

    class Channel(dj.Part):
        definition = """
        -> master
        -> ProbeType.Site
        ---
        voltage : <blob@main>  # microvolts
        """

    @property
    def key_source(self):
        """Insertions whose probe type has its sites entered."""
        return ProbeInsertion & (Probe * ProbeType.Site)

    def make(self, key):
        probe_type = (Probe * ProbeInsertion & key).fetch1("probe_type")
        sites = (ProbeType.Site & {"probe_type": probe_type}).keys(order_by="site")
        rng = np.random.default_rng(key["session"] * 100 + key["insertion_number"])
        samples = int(0.01 * SAMPLING_RATE)
        self.insert1(
            {**key, "sampling_rate": SAMPLING_RATE, "recording_duration": samples / SAMPLING_RATE}
        )
        self.Channel.insert(
            {**key, **site, "voltage": rng.normal(0.0, 20.0, samples).astype(np.float32)}
            for site in sites
        )


@schema
class ClusteringParamSet(dj.Lookup):
    definition = """
    paramset : int16
    ---
    clustering_method : enum('kilosort2.5', 'kilosort4', 'threshold')
    params : json
    param_description = "" : varchar(128)
    """
    contents = [
        {
            "paramset": 0,
            "clustering_method": "threshold",
            "param_description": "3.5 SD",
            "params": {"threshold": 3.5, "refractory_ms": 1.0},
        },
        {
            "paramset": 1,
            "clustering_method": "threshold",
            "param_description": "conservative",
            "params": {"threshold": 5.0, "refractory_ms": 2.0},
        },
    ]


@schema
class ClusteringTask(dj.Manual):
    definition = """
    -> EphysRecording
    -> ClusteringParamSet
    ---
    task_mode = "trigger" : enum('load', 'trigger')
    """


@schema
class Clustering(dj.Imported):
    definition = """
    -> ClusteringTask
    ---
    unit_count : int32
    clustered_at = CURRENT_TIMESTAMP : datetime
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit : int32
        ---
        -> ProbeType.Site.proj(peak_site="site")
        spike_times : <blob>  # seconds
        amplitude : float64  # microvolts
        """

    def make(self, key):
        params = (ClusteringParamSet & key).fetch1("params")
        rate = (EphysRecording & key).fetch1("sampling_rate")
        sorted_sites = []
        for channel in (EphysRecording.Channel & key).to_dicts(order_by="site"):
            voltage = channel["voltage"]
            crossings = np.flatnonzero(np.abs(voltage) > params["threshold"] * voltage.std())
            if crossings.size:
                sorted_sites.append((channel, crossings))
        units = [
            {
                **key,
                "unit": unit,
                "probe_type": channel["probe_type"],
                "peak_site": channel["site"],
                "spike_times": crossings / rate,
                "amplitude": float(np.abs(channel["voltage"][crossings]).mean()),
            }
            for unit, (channel, crossings) in enumerate(sorted_sites)
        ]
        self.insert1({**key, "unit_count": len(units)})
        self.Unit.insert(units)
