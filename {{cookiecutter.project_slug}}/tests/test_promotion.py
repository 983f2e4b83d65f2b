"""Comparing schema sets and checking declared versions, on the test schemas."""

from {{ cookiecutter.package_name }} import SCHEMA_VERSIONS, promotion, schema_prefix


def test_a_prefix_matches_itself(pipeline):
    assert not any(promotion.compare(schema_prefix(), schema_prefix()))


def test_missing_schemas_are_reported(pipeline):
    report = promotion.compare(schema_prefix(), "absent_")
    assert [difference.missing for difference in report] == [["absent_"]] * len(report)


def test_versions_are_recorded_and_checked(pipeline):
    never_declared = schema_prefix() + "never_"  # whatever other tests declared before
    assert promotion.version_mismatches(never_declared) == {
        name: (version, None) for name, version in SCHEMA_VERSIONS.items()
    }
    promotion.record_versions()
    assert promotion.version_mismatches() == {}
