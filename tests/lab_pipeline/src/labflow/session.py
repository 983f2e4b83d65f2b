"""Experimental sessions: who ran what on which rig, and the documents kept with them."""

import datajoint as dj

from . import lab, subject

schema = dj.Schema()


@schema
class Session(dj.Manual):
    definition = """
    -> subject.Subject
    session : int32  # counts from 1 for each subject
    ---
    session_datetime : datetime
    -> lab.Rig
    -> lab.User.proj(experimenter="user")
    -> [nullable] lab.Protocol
    session_quality = 1.0 : float32  # 0 (unusable) to 1
    is_training = 0 : bool
    """


@schema
class SessionDirectory(dj.Manual):
    definition = """
    -> Session
    ---
    session_dir : varchar(255)  # relative to the lab's raw-data root
    """


@schema
class SessionProtocolFile(dj.Manual):
    definition = """
    -> Session
    ---
    protocol_file : <attach@main>  # the signed protocol sheet
    """
