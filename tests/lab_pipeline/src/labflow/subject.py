"""The colony: species, lines, subjects and their genotypes."""

import datajoint as dj

from . import lab

schema = dj.Schema()


@schema
class Species(dj.Lookup):
    definition = """
    species : varchar(32)  # Latin name
    """
    contents = [{"species": "Mus musculus"}, {"species": "Rattus norvegicus"}]


@schema
class Allele(dj.Lookup):
    definition = """
    allele : varchar(64)
    ---
    allele_source = "" : varchar(255)
    """
    contents = [
        {"allele": "Ai93", "allele_source": "JAX 024103"},
        {"allele": "Slc17a7-IRES2-Cre", "allele_source": "JAX 023527"},
        {"allele": "wild type", "allele_source": ""},
    ]


@schema
class Subject(dj.Manual):
    definition = """
    subject : varchar(16)  # the colony's tag
    ---
    -> Species
    sex : enum('F', 'M', 'U')
    date_of_birth = null : date
    -> [nullable] lab.User.proj(responsible="user")
    subject_notes = "" : varchar(4096)
    husbandry = null : json  # cage, diet, light cycle
    """


@schema
class Genotype(dj.Manual):
    definition = """
    -> Subject
    -> Allele
    ---
    zygosity = "unknown" : enum('homozygous', 'heterozygous', 'hemizygous', 'unknown')
    """
