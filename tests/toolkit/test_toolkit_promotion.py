"""Comparing schema sets and checking declared versions, on the test schemas."""

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


def test_a_prefix_matches_itself(project, pipeline):
    prefix = pipeline.schema_prefix()
    assert not any(project.tk.promotion.compare(prefix, prefix))


def test_missing_schemas_are_reported(project, pipeline):
    report = project.tk.promotion.compare(pipeline.schema_prefix(), "absent_")
    assert [difference.missing for difference in report] == [["absent_"]] * len(report)
    assert len(report) == len(pipeline.modules)


def test_versions_are_recorded_and_checked(project, pipeline):
    promotion = project.tk.promotion
    never_declared = pipeline.schema_prefix() + "never_"  # whatever other tests declared before
    assert promotion.version_mismatches(never_declared) == {
        name: (version, None) for name, version in pipeline.schema_versions.items()
    }
    promotion.record_versions()
    assert promotion.version_mismatches() == {}
