"""People, protocols and rigs of the lab: reference tables every schema points to."""

import datajoint as dj

schema = dj.Schema()


@schema
class Lab(dj.Lookup):
    definition = """
    lab : varchar(32)  # short name of the lab
    ---
    lab_name : varchar(255)
    institution : varchar(255)
    time_zone = "UTC" : varchar(64)
    """
    contents = [
        {
            "lab": "churchland",
            "lab_name": "Churchland Lab",
            "institution": "Columbia University",
            "time_zone": "America/New_York",
        },
        {
            "lab": "mainen",
            "lab_name": "Mainen Lab",
            "institution": "Champalimaud Foundation",
            "time_zone": "Europe/Lisbon",
        },
    ]


@schema
class User(dj.Lookup):
    definition = """
    user : varchar(32)
    ---
    -> Lab
    email = null : varchar(255)
    admin = 0 : bool  # may curate others' sortings
    unique index (email)
    """
    contents = [
        {"user": "alice", "lab": "churchland", "email": "alice@example.org", "admin": True},
        {"user": "bob", "lab": "churchland", "email": None, "admin": False},
        {"user": "carla", "lab": "mainen", "email": "carla@example.org", "admin": False},
    ]


@schema
class Protocol(dj.Lookup):
    definition = """
    # animal-care and experimental protocols
    protocol : varchar(32)
    ---
    protocol_description = "" : varchar(1024)
    approved_on = null : date
    """
    contents = [
        {
            "protocol": "IACUC-2024-017",
            "approved_on": "2024-03-01",
            "protocol_description": "Head-fixed behaviour with acute recordings",
        },
        {
            "protocol": "IACUC-2025-003",
            "approved_on": None,
            "protocol_description": "Chronic two-photon imaging",
        },
    ]


@schema
class Rig(dj.Lookup):
    definition = """
    rig : varchar(16)
    ---
    -> Lab
    room : varchar(16)
    rig_config = null : json  # amplifier and camera settings
    """
    contents = [
        {
            "rig": "ephys-1",
            "lab": "churchland",
            "room": "B-210",
            "rig_config": {"amplifier": "Intan RHD2000", "gain": 192},
        },
        {"rig": "2p-1", "lab": "mainen", "room": "C-105", "rig_config": None},
    ]
