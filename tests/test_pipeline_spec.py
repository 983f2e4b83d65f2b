"""Unit tests of the schema graph: parsing, validation and dependency order."""

import pytest

DEFAULT = (
    "subject; session <- subject; ephys <- session; imaging <- session; analysis <- ephys, imaging"
)


def names(schemas):
    return [schema.name for schema in schemas]


def test_text_form(pre_gen):
    schemas = pre_gen.parse_text(DEFAULT)
    assert names(schemas) == ["subject", "session", "ephys", "imaging", "analysis"]
    assert schemas[4].upstream == ("ephys", "imaging")
    assert schemas[0].upstream == ()


def test_text_form_tolerates_whitespace_line_breaks_and_trailing_separators(pre_gen):
    text = "\n  subject ;\n\n session<-subject;;\n analysis <-  session ,subject ;\n"
    assert pre_gen.parse_text(text) == [
        pre_gen.Schema("subject"),
        pre_gen.Schema("session", ("subject",)),
        pre_gen.Schema("analysis", ("session", "subject")),
    ]


def test_mapping_form(pre_gen):
    schemas = pre_gen.parse_mapping(
        {
            "subject": None,
            "session": "subject",
            "ephys": ["session"],
            "analysis": {"upstream": ["ephys"], "description": "Results.", "role": "analysis"},
        }
    )
    assert [s.upstream for s in schemas] == [(), ("subject",), ("session",), ("ephys",)]
    assert schemas[3].description == "Results."
    assert schemas[3].role == "analysis"


def test_order_puts_upstream_first_and_keeps_the_users_order_otherwise(pre_gen):
    spec = "analysis <- ephys, imaging; imaging <- session; ephys <- session; session <- subject; subject"
    assert names(pre_gen.plan_pipeline(spec)) == [
        "subject",
        "session",
        "imaging",
        "ephys",
        "analysis",
    ]


def test_default_roles(pre_gen):
    """The guide's schemas keep the guide's roles; others follow their place in the graph."""
    roles = {s.name: s.role for s in pre_gen.plan_pipeline(DEFAULT + "; report <- analysis")}
    assert roles == {
        "subject": "acquisition",
        "session": "acquisition",
        "ephys": "acquisition",
        "imaging": "acquisition",
        "analysis": "analysis",
        "report": "analysis",
    }
    roles = {s.name: s.role for s in pre_gen.plan_pipeline("raw; clean <- raw; stats <- clean")}
    assert roles == {"raw": "acquisition", "clean": "processing", "stats": "analysis"}


def test_text_form_states_roles(pre_gen):
    schemas = pre_gen.plan_pipeline("raw; qc [analysis] <- raw; clean [ acquisition ] <- qc, raw")
    assert [(s.name, s.upstream, s.role) for s in schemas] == [
        ("raw", (), "acquisition"),
        ("qc", ("raw",), "analysis"),
        ("clean", ("qc", "raw"), "acquisition"),
    ]
    with pytest.raises(pre_gen.InputError, match="role 'boss' of 'qc' is unknown"):
        pre_gen.plan_pipeline("raw; qc [boss] <- raw")
    with pytest.raises(pre_gen.InputError, match="does not start with one schema name"):
        pre_gen.plan_pipeline("raw; qc [analysis <- raw")


def test_large_pipeline_orders_every_edge(pre_gen):
    spec = "; ".join(
        ["s0"] + [f"s{i} <- s{i - 1}" + (f", s{i - 5}" if i >= 5 else "") for i in range(1, 150)]
    )
    order = {name: index for index, name in enumerate(names(pre_gen.plan_pipeline(spec)))}
    for schema in pre_gen.parse_text(spec):
        assert all(order[parent] < order[schema.name] for parent in schema.upstream)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "the pipeline is empty"),
        (" ; \n ;", "the pipeline is empty"),
        ("Subject", "'Subject' is not a valid schema name"),
        ("my-schema", "'my-schema' is not a valid schema name"),
        ("2p", "'2p' is not a valid schema name"),
        ("a; b <- a b", "entry 2 'b <- a b' has an invalid upstream"),
        ("my schema", "entry 1 'my schema' does not start with one schema name"),
        ("class", "'class' is a Python keyword"),
        ("version", "'version' is a name the package keeps for itself"),
        ("toolkit", "'toolkit' is a name the package keeps for itself"),
        ("a; a", "'a' is listed twice"),
        ("a <- a", "'a' lists itself as upstream"),
        ("a <- ghost", "'a' depends on unknown schema 'ghost'"),
        ("a <- ", "entry 1 'a <-' lists no upstream schema"),
        ("<- a", "entry 1 '<- a' has no schema name"),
        ("a; b <- a,", "entry 2 'b <- a,' has an empty name"),
        ("a <- c; b <- a; c <- b", "dependency cycle a -> b -> c -> a"),
    ],
)
def test_invalid_specs_name_the_value_and_the_rule(pre_gen, spec, message):
    with pytest.raises(pre_gen.InputError, match="^schemas: ") as caught:
        pre_gen.plan_pipeline(spec)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cycle_through_a_mapping(pre_gen):
    with pytest.raises(pre_gen.InputError, match=r"cycle (x -> y -> x|y -> x -> y)"):
        pre_gen.plan_pipeline({"x": ["y"], "y": ["x"]})


def test_bad_mapping_entries(pre_gen):
    with pytest.raises(pre_gen.InputError, match="unknown key"):
        pre_gen.plan_pipeline({"a": {"parents": ["b"]}})
    with pytest.raises(pre_gen.InputError, match="role 'boss' of 'a' is unknown"):
        pre_gen.plan_pipeline({"a": {"role": "boss"}})


def test_list_form_is_one_entry_per_item(pre_gen):
    assert names(pre_gen.plan_pipeline(["subject", "session <- subject"])) == [
        "subject",
        "session",
    ]
    with pytest.raises(pre_gen.InputError, match="the list item {'b': 'a'} is not text"):
        pre_gen.plan_pipeline(["a", {"b": "a"}])


@pytest.mark.parametrize(
    ("spec", "is_path"),
    [
        ("lab.yaml", True),
        ("specs/lab", True),
        ("~/lab.yml", True),
        ("/dev/zero", True),
        ("a; b <- a", False),
        ("subject", False),
        ("a <- b/c", False),
    ],
)
def test_what_is_read_as_a_path(pre_gen, spec, is_path):
    assert pre_gen.is_path(spec) is is_path


def test_size_is_checked_before_the_entries_are_read(pre_gen):
    with pytest.raises(pre_gen.InputError, match="1001 schemas") as caught:
        pre_gen.plan_pipeline("; ".join(["Bad Name", *(f"s{i}" for i in range(1000))]))
    assert caught.value.rule == "spec-size"
    with pytest.raises(pre_gen.InputError, match="1001 schemas"):
        pre_gen.plan_pipeline({f"s{i}": None for i in range(1001)})


def test_bad_value_types_in_a_mapping(pre_gen):
    with pytest.raises(pre_gen.InputError, match="the upstream of 'a' is not a list of names"):
        pre_gen.plan_pipeline({"a": {"upstream": 3}})
    with pytest.raises(pre_gen.InputError, match="the description of 'a' is not text"):
        pre_gen.plan_pipeline({"a": {"description": ["x"]}})
    with pytest.raises(pre_gen.InputError, match="U\\+0000") as caught:
        pre_gen.plan_pipeline({"a": {"description": "x\0"}})
    assert caught.value.rule == "text"


def test_every_rule_is_a_function_of_value_and_context(pre_gen):
    """What another front end (copier's validators) calls: one line, or nothing."""
    assert pre_gen.problem("database_port", "3306", {}) == ""
    assert pre_gen.problem("database_port", "３３０６", {}).startswith("database_port: ")
    assert pre_gen.problem("schemas", "a; b <- a", {"database_backend": "postgresql"}) == ""
    assert "rule schema-shadow" in pre_gen.problem("schemas", "self", {})
    listed = {rule for rules in pre_gen.FIELD_RULES.values() for rule, _ in rules}
    assert listed | set(pre_gen.SCHEMA_NAME_RULES) <= set(pre_gen.RULES)
