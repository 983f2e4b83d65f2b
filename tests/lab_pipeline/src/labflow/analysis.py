"""Analyses that read any modality through the merge table."""

import datajoint as dj
import numpy as np

from . import activity, ephys, imaging

schema = dj.Schema()


@schema
class RateParams(dj.Lookup):
    definition = """
    rate_params : int16
    ---
    bin_size : float64  # seconds
    min_rate = 0.0 : float64  # Hz; units below it are left out
    """
    contents = [
        {"rate_params": 0, "bin_size": 0.001, "min_rate": 0.0},
        {"rate_params": 1, "bin_size": 0.005, "min_rate": 1.5},
    ]


@schema
class ActivitySummary(dj.Computed):
    definition = """
    -> activity.ActivityOutput
    -> RateParams
    ---
    mean_rate = null : float64  # events per second; null when nothing passed
    rates : <blob>  # one value per unit or mask
    """

    @property
    def key_source(self):
        """Every merge entry with parameter set 0; spikes with every parameter set."""
        return (
            activity.ActivityOutput * RateParams & ["rate_params = 0", {"source": "Spikes"}]
        ).proj()

    def make(self, key):
        bin_size, min_rate = (RateParams & key).fetch1("bin_size", "min_rate")
        source = (activity.ActivityOutput & key).fetch1("source")
        if source == "Spikes":
            clustering = ephys.Clustering & (activity.ActivityOutput.Spikes & key)
            duration = (ephys.EphysRecording & clustering).fetch1("recording_duration")
            spike_times = (ephys.Clustering.Unit & clustering).to_arrays("spike_times")
            rates = np.array([len(times) / duration for times in spike_times])
        else:
            segmentation = imaging.Segmentation & (activity.ActivityOutput.CalciumTraces & key)
            traces = (imaging.Segmentation.Mask & segmentation).to_arrays("trace")
            rates = np.array([float((trace > 0.1).mean()) / bin_size for trace in traces])
        kept = rates[rates >= min_rate]
        mean = float(kept.mean()) if kept.size else None
        self.insert1({**key, "mean_rate": mean, "rates": rates})
