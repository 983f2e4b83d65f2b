import datajoint as dj

schema = dj.Schema()


@schema
class Species(dj.Lookup):
    definition = """
    species : varchar(32)
    """
    contents = [("mouse",), ("rat",)]


@schema
class Subject(dj.Manual):
    definition = """
    subject_id : int32
    ---
    -> Species
    date_of_birth : date
    """
