"""A quick check that the template's toolkit runs on this pipeline.

The toolkit (src/{{ cookiecutter.package_name }}/toolkit) is tested in full where it is made, the project
template; this only shows that its commands find your tables.
"""

from {{ cookiecutter.package_name }}.toolkit import cli, worker


def test_the_commands_run_on_this_pipeline(pipeline, capsys):
    assert cli.main(pipeline, ["names"]) == 0
    assert cli.main(pipeline, ["status"]) == 0
    assert worker.main(pipeline, []) == 0  # everything is populated: one pass, no errors
    assert cli.main(pipeline, ["check"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in pipeline.schema_names())
