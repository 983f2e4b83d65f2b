"""Two-photon calcium imaging: scans, motion correction, segmentation, fluorescence."""

import datajoint as dj
import numpy as np

from . import session

schema = dj.Schema()


@schema
class Scan(dj.Imported):
    definition = """
    -> session.Session
    ---
    frame_rate : float64  # Hz
    frame_count : int32
    scanner = "galvo-resonant" : varchar(32)
    """

    class Field(dj.Part):
        definition = """
        -> master
        field : int16
        ---
        depth : float32  # micrometres
        movie : <blob@main>  # frames x height x width
        """

    @property
    def key_source(self):
        """Sessions recorded on a two-photon rig."""
        return session.Session & {"rig": "2p-1"}

    def make(self, key):
        rng = np.random.default_rng(key["session"])
        frames = 20
        self.insert1({**key, "frame_rate": 15.0, "frame_count": frames})
        self.Field.insert(
            {
                **key,
                "field": field,
                "depth": 150.0 + 50 * field,
                "movie": rng.random((frames, 8, 8)),
            }
            for field in range(2)
        )


@schema
class MotionCorrection(dj.Computed):
    definition = """
    -> Scan
    ---
    x_shifts : <blob>  # pixels, per frame
    y_shifts : <blob>  # pixels, per frame
    """

    def make(self, key):
        movie = np.mean([row["movie"] for row in (Scan.Field & key).to_dicts()], axis=0)
        reference = movie.mean(axis=0)
        shifts = np.array(
            [np.unravel_index(np.argmax(frame - reference), frame.shape) for frame in movie]
        )
        self.insert1({**key, "x_shifts": shifts[:, 1] - 4.0, "y_shifts": shifts[:, 0] - 4.0})


@schema
class Segmentation(dj.Computed):
    definition = """
    -> MotionCorrection
    ---
    mask_count : int32
    """

    class Mask(dj.Part):
        definition = """
        -> master
        -> Scan.Field
        mask : int32
        ---
        pixels : <blob>  # flat indices into the field
        trace : <blob@main>  # dF/F per frame
        """

    def make(self, key):
        masks = []
        for field in (Scan.Field & key).to_dicts(order_by="field"):
            movie = field["movie"]
            brightest = np.argsort(movie.mean(axis=0), axis=None)[-3:]
            for number, pixel in enumerate(brightest):
                trace = movie.reshape(len(movie), -1)[:, pixel]
                masks.append(
                    {
                        **key,
                        "field": field["field"],
                        "mask": number,
                        "pixels": np.array([pixel]),
                        "trace": (trace - trace.mean()) / trace.mean(),
                    }
                )
        self.insert1({**key, "mask_count": len(masks)})
        self.Mask.insert(masks)
