"""Sample rows of the lab's manual tables, in passes (see the package README).

Pass 1 is what people enter; pass 2 needs results of pass 1: the clustering tasks
name recordings, and the merge table registers the clusterings and segmentations.
"""

import datetime
from pathlib import Path
from typing import Any

import datajoint as dj

from labflow import activity, ephys, imaging, session, subject

SITES = {"neuropixels 1.0": 8, "tetrode": 4}


#: The merge table's sources: each Part table and the table it registers.
SOURCES = {
    activity.ActivityOutput.Spikes: ephys.Clustering,
    activity.ActivityOutput.CalciumTraces: imaging.Segmentation,
}


def merged(part: type[dj.Part] | None = None) -> list[dict]:
    """Rows of the merge table (part None) or of one of its Part tables."""
    return [
        row
        for source, upstream in SOURCES.items()
        if part in (None, source)
        for row in activity.ActivityOutput.entries(source, upstream)[part is not None]
    ]


SAMPLE_DATA: list[dict[Any, Any]] = [
    {
        subject.Subject: [
            {
                "subject": "CJ-041",
                "species": "Mus musculus",
                "sex": "F",
                "date_of_birth": datetime.date(2025, 11, 2),
                "responsible": "alice",
                "subject_notes": "",
                "husbandry": {"cage": 12, "diet": "standard", "light": "12:12 reversed"},
            },
            {
                "subject": "CJ-042",
                "species": "Mus musculus",
                "sex": "M",
                "date_of_birth": None,
                "responsible": None,
                "subject_notes": "",
                "husbandry": None,
            },
            {
                "subject": "MR-007",
                "species": "Rattus norvegicus",
                "sex": "U",
                "date_of_birth": datetime.date(2025, 9, 30),
                "responsible": "carla",
                "subject_notes": "imaging cohort",
                "husbandry": {"cage": 3},
            },
        ],
        subject.Genotype: [
            {"subject": "CJ-041", "allele": "Slc17a7-IRES2-Cre", "zygosity": "heterozygous"},
            {"subject": "CJ-041", "allele": "Ai93", "zygosity": "heterozygous"},
            {"subject": "MR-007", "allele": "wild type", "zygosity": "unknown"},
        ],
        session.Session: [
            {
                "subject": subject_,
                "session": 1,
                "session_datetime": datetime.datetime(2026, 1, day, hour),
                "rig": rig,
                "experimenter": experimenter,
                "protocol": protocol,
                "session_quality": quality,
                "is_training": training,
            }
            for subject_, day, hour, rig, experimenter, protocol, quality, training in [
                ("CJ-041", 12, 9, "ephys-1", "alice", "IACUC-2024-017", 1.0, False),
                ("CJ-042", 13, 14, "ephys-1", "bob", None, 0.5, True),
                ("MR-007", 14, 10, "2p-1", "carla", "IACUC-2025-003", 0.8, False),
            ]
        ],
        session.SessionDirectory: [
            {"subject": "CJ-041", "session": 1, "session_dir": "CJ-041/2026-01-12"},
            {"subject": "MR-007", "session": 1, "session_dir": "MR-007/2026-01-14"},
        ],
        session.SessionProtocolFile: [
            {"subject": "CJ-041", "session": 1, "protocol_file": str(Path(__file__))},
        ],
        ephys.ProbeType.Site: [
            {
                "probe_type": probe_type,
                "site": site,
                "x_coord": 16.0 * (site % 2),
                "y_coord": 20.0 * site,
            }
            for probe_type, count in SITES.items()
            for site in range(count)
        ],
        ephys.ProbeInsertion: [
            {
                "subject": "CJ-041",
                "session": 1,
                "insertion_number": 0,
                "probe": "18194819302",
                "depth": 3200.0,
            },
            {
                "subject": "CJ-041",
                "session": 1,
                "insertion_number": 1,
                "probe": "T-0042",
                "depth": None,
            },
            {
                "subject": "CJ-042",
                "session": 1,
                "insertion_number": 0,
                "probe": "18194819302",
                "depth": None,
            },
        ],
    },
    {
        # Every recording not yet given to spike sorting, with both parameter sets.
        ephys.ClusteringTask: lambda: [
            {**key, "paramset": paramset}
            for key in (ephys.EphysRecording.proj() - ephys.ClusteringTask).keys()
            for paramset in (0, 1)
        ],
    },
    {
        activity.ActivityOutput: merged,
        activity.ActivityOutput.Spikes: lambda: merged(activity.ActivityOutput.Spikes),
        activity.ActivityOutput.CalciumTraces: lambda: merged(
            activity.ActivityOutput.CalciumTraces
        ),
    },
]
