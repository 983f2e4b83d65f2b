import datajoint as dj

from . import subject  # Import dependency

schema = dj.Schema()


@schema
class Session(dj.Manual):
    definition = """
    -> subject.Subject
    session_idx : int16
    ---
    session_date : date
    """
