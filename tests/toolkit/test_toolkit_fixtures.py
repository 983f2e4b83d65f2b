"""The fixtures themselves: two packages side by side, each combination declared and filled."""

import types

import pytest

SPREAD_OVER_WORKERS = True  # grouped by database and project (see conftest.py)


def test_two_packages_have_their_own_toolkit(projects):
    starter, lab = projects["starter"], projects["lab"]
    assert starter.package != lab.package
    assert starter.tk.cli is not lab.tk.cli
    assert starter.tk.project.pipeline.package == starter.package
    assert lab.tk.project.pipeline.package == lab.package
    # The source exists once: both packages' toolkit is the template's folder.
    assert starter.tk.cli.__file__.endswith("/toolkit/cli.py")
    assert len(starter.pipeline.modules) == 5
    assert len(lab.pipeline.modules) == 7


@pytest.mark.parametrize("kind", ["starter", "lab"])
def test_main_uses_the_pipeline_it_is_given(projects, kind, capsys):
    """cli.main(pipeline, argv) acts on that pipeline, whichever package was built last."""
    chosen = projects[kind]
    other = projects["lab" if kind == "starter" else "starter"]
    assert other.tk.cli.main(other.pipeline, ["names"]) == 0  # the other one in between
    capsys.readouterr()
    assert chosen.tk.cli.main(chosen.pipeline, ["names"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if "->" in line}
    assert names == set(chosen.pipeline.graph)
    assert chosen.tk.project.pipeline.package == chosen.package
    assert other.tk.project.pipeline.package == other.package  # each toolkit its own


def test_every_combination_is_declared_and_populated(pipeline, database):
    for table in pipeline.auto_tables():
        remaining, total = table().progress()
        assert remaining == 0 and total > 0, table.__name__
    assert all(
        name.startswith(pipeline.schema_prefix()) for name in pipeline.schema_names().values()
    )
    if database.account is not None:
        assert pipeline.schema_prefix().startswith(database.account.prefix + "test_")


@pytest.mark.parametrize("entry", ["cli", "worker"])
def test_main_makes_its_pipeline_the_current_one(projects, entry, capsys):
    """Another Pipeline built with the same toolkit becomes the current one; cli.main and
    worker.main(pipeline, argv) hand the commands theirs again (through use())."""
    project = projects["starter"]
    toolkit = project.tk.project
    other = toolkit.Pipeline(project.pipeline.modules[:1], production_prefix="other_",
                             settings_prefix="OTHER")  # fmt: skip
    try:
        assert toolkit.pipeline.prefix_variable == "OTHER_SCHEMA_PREFIX"
        if entry == "cli":
            assert project.tk.cli.main(project.pipeline, ["names"]) == 0
        else:
            with pytest.raises(SystemExit, match="2"):
                project.tk.worker.main(project.pipeline, ["--table", "NoSuchTable"])
        assert toolkit.pipeline.prefix_variable == project.pipeline.prefix_variable
        assert toolkit.pipeline.graph == project.pipeline.graph
    finally:
        toolkit.use(project.pipeline)
    del other


def test_a_pipeline_lists_its_schema_modules_upstream_first(projects):
    """Pipeline() refuses a module listed before one it imports, and a module that is not a
    schema module; a refused Pipeline does not become the toolkit's current one."""
    starter = projects["starter"]
    project = starter.tk.project
    current = project._current
    settings = {"production_prefix": "x_", "settings_prefix": "X"}
    with pytest.raises(project.PipelineError, match="listed after it: list the schema modules"):
        project.Pipeline(starter.pipeline.modules[::-1], **settings)
    with pytest.raises(project.PipelineError, match=r"plain has no `schema = dj.Schema\(\)`"):
        project.Pipeline([types.ModuleType("plain")], **settings)
    with pytest.raises(project.PipelineError, match="at least one schema module"):
        project.Pipeline([], **settings)
    assert project._current is current
