import datajoint as dj

from . import session  # Import dependency

schema = dj.Schema()


@schema
class Probe(dj.Lookup):
    definition = """
    probe_type : varchar(32)
    ---
    num_channels : int32
    """
    contents = [("neuropixels", 384), ("tetrode", 4)]


@schema
class Recording(dj.Manual):
    definition = """
    -> session.Session
    -> Probe
    ---
    recording_path : varchar(255)
    duration : float64  # seconds
    """


@schema
class ChannelTime(dj.Computed):
    definition = """
    -> Recording
    ---
    channel_seconds : float64  # channels times duration
    """

    def make(self, key):
        channels, duration = (Recording * Probe & key).fetch1("num_channels", "duration")
        self.insert1({**key, "channel_seconds": channels * duration})
