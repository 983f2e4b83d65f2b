"""Values kept in the object store are written, read back, and removed after a delete.

It finds every store-backed attribute (`<blob@main>`, `<attach@main>`, `object@main`, ...)
of every table by itself, and chooses the entry it deletes from the pipeline's graph.
The store is the `main` file store of the `pipeline` fixture (a temporary folder).
"""

from typing import Any

import datajoint as dj
import pytest

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


def collector(pipeline):
    return dj.gc.GarbageCollector(*(module.schema for module in pipeline.modules), store="main")


def stored_attributes(project, pipeline) -> dict[Any, list[str]]:
    """Every table and part table with attributes kept in a store, and those attributes."""
    toolkit = project.module.toolkit
    found = {}
    for module in pipeline.modules:
        for table in toolkit.tables(module):
            for candidate in toolkit.with_parts(table):
                heading = candidate().heading
                names = [*heading.hash_objects, *heading.schema_objects]
                if names:
                    found[candidate] = names
    return found


def refilled(project, pipeline) -> set[str]:
    """Tables whose rows insert_sample_data() enters again: the sample data's, and the
    auto-populated tables with their parts (Lookup contents are entered at declare only)."""
    with_parts = project.module.toolkit.with_parts
    sample = {table.full_table_name for step in project.sample_data for table in step}
    auto = {part.full_table_name for table in pipeline.auto_tables() for part in with_parts(table)}
    return sample | auto


def entry_to_delete(project, pipeline, stored: set[str]) -> tuple[Any, dict]:
    """The first sample row whose delete reaches a table with stored values, and only
    tables the sample data fill again.

    DataJoint previews the delete (Diagram.cascade). part_integrity="cascade" deletes the
    master of every Part row the delete reaches: a merge table's Part tables point to
    other schemas, so deleting upstream reaches them without their master.
    """
    again = refilled(project, pipeline)
    for step in project.sample_data:
        entries: dict[Any, Any] = step
        for table, rows in entries.items():
            rows = rows() if callable(rows) else rows
            if not rows:
                continue
            key = {name: rows[0][name] for name in table.primary_key}
            preview = dj.Diagram.cascade(table() & key, part_integrity="cascade")
            reached = {name for name, count in preview.counts().items() if count}
            if reached & stored and reached <= again:
                return table, key
    pytest.fail("no sample row's delete reaches stored values and only refilled tables")


def row_counts(operations) -> dict[str, int]:
    return {operations.label(table): len(table()) for table in operations.all_tables()}


def test_objects_round_trip_and_deleted_ones_are_collected(project, pipeline, tmp_path):
    operations = project.tk.operations
    assert collector(pipeline).collect()["hash_paths_orphaned"] == 0
    stored = stored_attributes(project, pipeline)
    assert stored, "both pipelines keep values in the store (<blob@main>, <attach@main>)"
    with dj.config.override(download_path=str(tmp_path)):
        for table, names in stored.items():
            rows = table().to_dicts(limit=1)
            assert rows, f"{table.__name__} has no rows to read back"
            for name in names:
                assert rows[0][name] is not None, f"{table.__name__}.{name}"

    # Delete one entry upstream: the rows go at once, their objects at garbage collection.
    before = row_counts(operations)
    table, key = entry_to_delete(project, pipeline, {table.full_table_name for table in stored})
    (table() & key).delete(prompt=False, part_integrity="cascade")
    assert row_counts(operations) != before
    stats = collector(pipeline).collect(dry_run=False)
    assert stats["deleted"] > 0
    assert stats["errors"] == 0

    # Put the pipeline back as the other tests expect it.
    pipeline.insert_sample_data(project.sample_data)
    assert row_counts(operations) == before
