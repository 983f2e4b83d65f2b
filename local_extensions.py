"""Jinja extension of the template (cookiecutter.json's `_extensions`).

Jinja's `tojson` filter sorts mapping keys by default. The hooks receive the answers
through `{{ cookiecutter | tojson }}`, and a schema spec given as a mapping must keep
the order the user wrote it in (ties in the dependency order follow it), so keys are
kept in their order.
"""

from jinja2.ext import Extension


class KeepKeyOrder(Extension):
    """`tojson` keeps mapping keys in their order."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.policies["json.dumps_kwargs"] = {"sort_keys": False}
