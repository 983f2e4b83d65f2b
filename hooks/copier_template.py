"""copier support: the same questions, checks and module writer as cookiecutter's.

copier reads `copier.yml`, which `python hooks/copier_template.py` writes from
`cookiecutter.json` (the questions, their defaults and prompts) and from the rules
of `pre_gen_project.py` (the choices); tests/test_copier.py checks the two agree.
When copier renders the template, the Jinja extension below gives the templates
the `cookiecutter` namespace they were written for, computes the private
`__` variables of cookiecutter.json the same way cookiecutter does, and checks
every answer with the pre-generation hook's rules as it is given. The copier task
then writes the schema modules with the post-generation hook's code, so both
tools produce the same files.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import json
import re
import sys
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

TEMPLATE = Path(__file__).resolve().parents[1]
QUESTIONS = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
# Questions copier asks only when they matter (cookiecutter asks every one).
WHEN = {
    "s3_endpoint": "{{ object_store == 's3' }}",
    "s3_bucket": "{{ object_store == 's3' }}",
    "store_location": "{{ object_store != 'none' }}",
}
# What `copier update` must do to a project when it crosses a template version, before
# the update merges: {"version": "X.Y.Z", "rename": {"old/path": "new/path"}} moves the
# lab's files (paths may name {package_name}), so their edits follow them.
MIGRATIONS: list[dict[str, Any]] = []
# copier's default exclusions (it drops them when _exclude is set), and the toolkit folder.
DEFAULT_EXCLUDE = ["copier.yaml", "copier.yml", "~*", "*.py[co]", "__pycache__", ".git", ".DS_Store"]
TOOLKIT_PATTERN = "src/*/toolkit"
TOOLKIT = TEMPLATE / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "toolkit"
# Questions whose answer may also be structured: the schema spec as a mapping, given
# with --data-file.
YAML_QUESTIONS = {"schemas"}


@functools.cache
def load_hook(name: str):
    """Import one of the cookiecutter hooks as a module (its Jinja placeholder stays unused)."""
    spec = importlib.util.spec_from_file_location(
        f"dj_template_{name}", TEMPLATE / "hooks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def slugify(value: str, max_length: int = 0, word_boundary: bool = False) -> str:
    """cookiecutter's `slugify` filter: python-slugify's, or a plain ASCII stand-in."""
    try:
        from slugify import slugify as python_slugify
    except ImportError:
        pass
    else:
        return python_slugify(value, max_length=max_length, word_boundary=word_boundary)
    ascii_text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if max_length and len(slug) > max_length:
        cut = slug[:max_length]
        if word_boundary and slug[max_length] != "-" and "-" in cut:
            cut = cut.rsplit("-", 1)[0]
        slug = cut.strip("-")
    return slug


def yaml_in_order(value: Any) -> str:
    """YAML that keeps the order of mappings (the answers file, read back by copier update)."""
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)


def task_context(context: Mapping[str, Any]) -> str:
    """The context for the module-writing task, as JSON in the spec's order (not tojson's)."""
    return json.dumps({key: value for key, value in context.items() if key != "__prompts__"})


def cookiecutter_context(answers: Mapping[str, Any], environment) -> dict[str, Any]:
    """The context cookiecutter would build: answers, then defaults rendered in order."""
    context: dict[str, Any] = {}
    for key, default in QUESTIONS.items():
        if key in answers and not key.startswith("_"):
            context[key] = answers[key]
        elif isinstance(default, str):
            context[key] = environment.from_string(default).render(cookiecutter=context)
        else:
            context[key] = default
    return context


def copier_yml() -> str:
    """copier.yml, derived from cookiecutter.json and the hook's choices."""
    import yaml

    choices = load_hook("pre_gen_project").CHOICES
    prompts = QUESTIONS["__prompts__"]
    settings: dict[str, Any] = {
        "_min_copier_version": "9.4.0",
        "_subdirectory": "{% raw %}{{cookiecutter.project_slug}}{% endraw %}",
        "_templates_suffix": "",
        "_answers_file": ".copier-answers.yml",
        # The toolkit is plain Python that must not go through Jinja: the task copies it,
        # as cookiecutter's _copy_without_render does.
        "_exclude": [*DEFAULT_EXCLUDE, TOOLKIT_PATTERN],
        "_jinja_extensions": [
            "copier_template_extensions.TemplateExtensionLoader",
            "hooks/copier_template.py:CookiecutterNamespace",
        ],
        "_tasks": [
            {
                "command": [
                    "{{ _copier_python }}",
                    "{{ _copier_conf.src_path }}/hooks/copier_template.py",
                    "write-modules",
                    "{{ cookiecutter | task_context }}",
                ],
            }
        ],
    }
    if MIGRATIONS:
        settings["_migrations"] = [
            {
                "version": migration["version"],
                "when": "{{ _stage == 'before' }}",
                "command": [
                    "{{ _copier_python }}",
                    "{{ _copier_conf.src_path }}/hooks/copier_template.py",
                    "migrate",
                    migration["version"],
                ],
            }
            for migration in MIGRATIONS
        ]
    questions: dict[str, Any] = {}
    for key, default in QUESTIONS.items():
        if key.startswith("_"):
            continue
        question: dict[str, Any] = {
            # Typed as one line of text, like cookiecutter's; a mapping from --data-file
            # stays a mapping.
            "type": f"{{{{ 'yaml' if {key} is mapping else 'str' }}}}"
            if key in YAML_QUESTIONS
            else "str",
            "help": prompts[key],
        }
        if key in choices:
            question["choices"] = list(choices[key])
        question["default"] = default
        if key in WHEN:
            question["when"] = WHEN[key]
        question["validator"] = f"{{{{ refusal({key!r}) }}}}"
        questions[key] = question
    header = (
        "# Written by `python hooks/copier_template.py` from cookiecutter.json: edit that\n"
        "# file (or this script), then run it again. tests/test_copier.py checks they agree.\n"
    )
    dump = yaml.safe_dump({**settings, **questions}, sort_keys=False, allow_unicode=True, width=100)
    return header + dump


try:
    from copier_template_extensions import ContextHook
    from jinja2 import nodes, pass_context
    from jinja2.ext import Extension
except ImportError:  # imported by the cookiecutter tests or the task without copier
    pass
else:

    class CookiecutterNamespace(ContextHook):
        """`cookiecutter.<answer>` in copier, the filters and tags the templates use, checks."""

        tags: ClassVar[set[str]] = {"now"}

        def __init__(self, environment) -> None:
            super().__init__(environment)
            environment.filters["slugify"] = slugify
            # As local_extensions.KeepKeyOrder does for cookiecutter: tojson keeps key order.
            environment.policies["json.dumps_kwargs"] = {"sort_keys": False}
            # tojson and to_nice_yaml sort mapping keys: the spec's order would be lost.
            environment.filters["task_context"] = task_context
            environment.filters["yaml_in_order"] = yaml_in_order
            environment.globals["refusal"] = refusal
            # cookiecutter also looks for included templates in ../templates.
            environment.loader.searchpath.append(str(TEMPLATE / "templates"))

        def hook(self, context) -> None:
            context["cookiecutter"] = cookiecutter_context(context, self.environment)

        def parse(self, parser):
            """`{% now 'utc', '%Y' %}`, as jinja2-time gives cookiecutter."""
            lineno = next(parser.stream).lineno
            args = [parser.parse_expression()]
            if parser.stream.skip_if("comma"):
                args.append(parser.parse_expression())
            else:
                args.append(nodes.Const("%Y-%m-%d"))
            return nodes.Output([self.call_method("_now", args)], lineno=lineno)

        @staticmethod
        def _now(timezone: str, format_: str) -> str:
            if timezone != "utc":
                raise ValueError(f"only 'utc' is supported, not {timezone!r}")
            now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (hooks run on 3.10)
            return now.strftime(format_)

    @pass_context
    def refusal(context, field: str) -> str:
        """The hook's one line for this answer, or '' when the answer is good."""
        answers = dict(context["cookiecutter"])
        return load_hook("pre_gen_project").problem(field, answers[field], answers)

    del Extension  # only ContextHook's own base is used


def copy_toolkit(package: str) -> None:
    """The toolkit folder, copied as it is in the template (replacing an older one whole)."""
    import shutil

    target = Path("src", package, "toolkit")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(TOOLKIT, target, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))


def write_modules(context: dict[str, Any]) -> None:
    """The copier task: copy the toolkit as cookiecutter does, plan the pipeline as
    pre_gen_project does, write it as post_gen does."""
    from dataclasses import asdict

    copy_toolkit(context["package_name"])
    pre_gen, post_gen = load_hook("pre_gen_project"), load_hook("post_gen_project")
    plan = pre_gen.validate(context)
    Path(pre_gen.PLAN_FILE).write_text(
        json.dumps([asdict(schema) for schema in plan], indent=2), encoding="utf-8"
    )
    post_gen.write_schema_modules(context)


def migrate(version: str) -> None:
    """A migration, run by `copier update` in the project: `git mv` the renamed files.

    The move is staged, so copier's three-way merge sees the lab's edits at the new path.
    """
    import subprocess

    import yaml

    answers = yaml.safe_load(Path(".copier-answers.yml").read_text(encoding="utf-8"))
    (migration,) = (m for m in MIGRATIONS if m["version"] == version)
    for old, new in migration.get("rename", {}).items():
        source, target = (Path(path.format(**answers)) for path in (old, new))
        if source.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "mv", str(source), str(target)], check=True)
            print(f"moved {source} to {target}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if argv[:1] == ["write-modules"] and len(argv) == 2:
        write_modules(json.loads(argv[1]))
        return 0
    if argv[:1] == ["migrate"] and len(argv) == 2:
        migrate(argv[1])
        return 0
    if not argv:
        (TEMPLATE / "copier.yml").write_text(copier_yml(), encoding="utf-8")
        return 0
    print("usage: copier_template.py [write-modules CONTEXT | migrate VERSION]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
