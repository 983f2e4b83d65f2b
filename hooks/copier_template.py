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
# What `copier update` must do to a project when it crosses a template version:
# {"version": "X.Y.Z", "rename": {"old/path": "new/path"}} moves the lab's files before the
# update merges (paths may name {package_name}), so their edits follow them;
# "relocate": the name of a function of this script that sets the lab's files aside before
# the update and puts them back, merged, after it (`relocate_pipeline`).
MIGRATIONS: list[dict[str, Any]] = [
    # 0.2.0: the schema modules leave the `pipeline` subpackage for the top of the package,
    # the template's code moves into `toolkit/`, the sample rows into tests/.
    {"version": "0.2.0", "relocate": "relocate_pipeline"},
]
# copier's default exclusions (it drops them when _exclude is set), and the toolkit folder.
DEFAULT_EXCLUDE = [
    "copier.yaml",
    "copier.yml",
    "~*",
    "*.py[co]",
    "__pycache__",
    ".git",
    ".DS_Store",
]
TOOLKIT_PATTERN = "src/*/toolkit"
TOOLKIT = (
    TEMPLATE / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "toolkit"
)
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
                "version": version,
                # before the merge, and after it (a relocation puts the lab's files back)
                "when": "{{ true }}",
                "command": [
                    "{{ _copier_python }}",
                    "{{ _copier_conf.src_path }}/hooks/copier_template.py",
                    "migrate",
                    version,
                    "{{ _stage }}",
                    "{{ cookiecutter | task_context }}",
                ],
            }
            for version in dict.fromkeys(migration["version"] for migration in MIGRATIONS)
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


def git_output(*args: str) -> str:
    import subprocess

    done = subprocess.run(["git", *args], check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {args[0]}: {done.stderr.strip() or 'failed'} (a git tree is needed)")
    return done.stdout


def project_context() -> dict[str, Any]:
    """The project's answers as cookiecutter's context, from .cruft.json or .copier-answers.yml."""
    cruft = Path(".cruft.json")
    if cruft.is_file():
        return json.loads(cruft.read_text(encoding="utf-8"))["context"]["cookiecutter"]
    answers = Path(".copier-answers.yml")
    if not answers.is_file():
        raise SystemExit("no .cruft.json or .copier-answers.yml here: run this in the project")
    import jinja2
    import yaml

    environment = jinja2.Environment()  # text, not HTML: nothing to escape
    environment.filters["slugify"] = slugify
    return cookiecutter_context(yaml.safe_load(answers.read_text(encoding="utf-8")), environment)


def migrate(version: str, stage: str = "before", context: dict[str, Any] | None = None) -> None:
    """The migrations of one template version, run in the project by `copier update` before
    its merge and after it (by hand around `cruft update`: see the generated README).

    Before: `git mv` the renamed files (staged, so copier's three-way merge sees the lab's
    edits at the new path) and set aside what a relocation moves; after: put it back.
    """
    import subprocess

    migrations = [migration for migration in MIGRATIONS if migration["version"] == version]
    if not migrations:
        known = ", ".join(dict.fromkeys(m["version"] for m in MIGRATIONS)) or "none"
        raise SystemExit(f"no migration for template version {version!r} (known: {known})")
    context = context or project_context()
    for migration in migrations:
        for old, new in migration.get("rename", {}).items() if stage == "before" else ():
            source, target = (Path(path.format(**context)) for path in (old, new))
            if source.exists() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["git", "mv", str(source), str(target)], check=True)
                print(f"moved {source} to {target}", file=sys.stderr)
        if "relocate" in migration:
            globals()[migration["relocate"]](stage, context, version)


def old_starter(package: str, context: dict[str, Any]) -> dict[str, str]:
    """pipeline/*.py and the schemas' tests, as the project's own module writer (the old
    scaffold.py) wrote them for its answers, by path: the base of the three-way merge that
    puts the lab's versions back."""
    import tempfile
    import types
    from dataclasses import asdict

    try:
        plan = [asdict(schema) for schema in load_hook("pre_gen_project").validate(dict(context))]
        scaffold = Path("src", package, "scaffold.py")
        module = types.ModuleType("old_scaffold")
        sys.modules[module.__name__] = module
        exec(compile(scaffold.read_text(encoding="utf-8"), str(scaffold), "exec"), vars(module))  # noqa: S102
        blob = context.get("__blob") or (
            "<blob>" if context["object_store"] == "none" else "<blob@main>"
        )
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            (root / "src" / package).mkdir(parents=True)
            (root / "tests").mkdir()
            module.write_pipeline(root, package, plan, blob=blob)
            written = [*root.glob(f"src/{package}/pipeline/*.py"), *root.glob("tests/*.py")]
            return {
                str(path.relative_to(root)): path.read_text(encoding="utf-8") for path in written
            }
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the lab's versions are kept as they are
        print(f"note: the starter modules were not re-created ({error})", file=sys.stderr)
        return {}


def merge_text(ours: str, base: str, theirs: str, version: str) -> tuple[str, bool]:
    """git merge-file of three texts: the result, and whether it merged without conflict."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder, name) for name in ("ours", "base", "theirs")]
        for path, text in zip(paths, (ours, base, theirs), strict=True):
            path.write_text(text, encoding="utf-8")
        labels = ["yours", "as generated", f"template {version}"]
        done = subprocess.run(
            ["git", "merge-file", "-p", *(f"-L{label}" for label in labels), *map(str, paths)],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode < 0 or done.returncode > 127:
        raise SystemExit(f"git merge-file failed: {done.stderr.strip()}")
    return done.stdout, done.returncode == 0


def relocate_pipeline(stage: str, context: dict[str, Any], version: str) -> None:
    """0.2.0: src/<pkg>/pipeline/ (the lab's schema modules, version.py, sample_data.py,
    __init__.py's MODULES) moves to the top of the package, the sample rows to tests/.

    A move is a merge copier and cruft cannot make (the new path has no common ancestor),
    so before the update the lab's pipeline/ files and the schemas' tests are set aside (in
    .git) and put back as the old template wrote them, which the update then moves, changes
    or removes cleanly; after it,
    each is merged into its new place, three-way: the lab's version, the old starter, the
    new starter. Imports follow: `from ..utils` -> `from .toolkit.utils` (any toolkit
    module), sample data `from . import` -> `from <pkg> import`, tests `<pkg>.pipeline` ->
    `<pkg>`; MODULES (with any schema the lab added) goes into the package's __init__.py.
    """
    import shutil
    import subprocess

    package = context["package_name"]
    source = Path("src", package)
    pipeline = source / "pipeline"
    stash = Path(git_output("rev-parse", "--git-path", f"dj-template-{version}.json").strip())
    if stage == "before":
        if not (pipeline / "__init__.py").is_file():
            return  # already laid out the new way
        if stash.exists():
            raise SystemExit(
                f"{pipeline} is set aside already ({stash}): run `migrate {version} after`"
            )
        starter = old_starter(package, context)
        paths = [*sorted(pipeline.glob("*.py")), *(Path(name) for name in starter)]
        lab = {str(path): path.read_text(encoding="utf-8") for path in paths if path.is_file()}
        stash.write_text(json.dumps({"package": package, "lab": lab, "starter": starter}))
        for name in lab:
            path = Path(name)
            if name in starter:
                path.write_text(starter[name], encoding="utf-8")
                subprocess.run(["git", "add", "--", str(path)], check=True)
            else:
                subprocess.run(["git", "rm", "-q", "--", str(path)], check=True)
        print(f"{pipeline}: your files set aside for the update ({stash})", file=sys.stderr)
        return
    if not stash.is_file():
        if (pipeline / "__init__.py").is_file():
            print(
                f"{pipeline} was not set aside: run `migrate {version} before` first",
                file=sys.stderr,
            )
        return
    saved = json.loads(stash.read_text(encoding="utf-8"))
    toolkit = {path.stem for path in (source / "toolkit").glob("*.py")}

    def new_style(path: Path, text: str) -> str:
        if path.parts[:1] == ("tests",):
            text = text.replace(f"{package}.pipeline.sample_data", "sample_data")
            return re.sub(rf"\b{package}\.pipeline\b", package, text)
        if path.name == "sample_data.py":
            return re.sub(r"^from \. import ", f"from {package} import ", text, flags=re.MULTILINE)
        return re.sub(
            r"^(\s*from )\.\.(\w+)",
            lambda match: f"{match[1]}.toolkit.{match[2]}" if match[2] in toolkit else match[0],
            text,
            flags=re.MULTILINE,
        )

    conflicts = []
    for name, text in saved["lab"].items():
        path = Path(name)
        if path == pipeline / "__init__.py":
            continue
        target = path if path.parts[:1] == ("tests",) else source / path.name
        if path.name == "sample_data.py":
            target = Path("tests", path.name)
        merged, clean = new_style(path, text), True
        if name in saved["starter"] and target.is_file():
            base = new_style(path, saved["starter"][name])
            merged, clean = merge_text(merged, base, target.read_text(encoding="utf-8"), version)
        target.write_text(merged, encoding="utf-8")
        conflicts += [] if clean else [str(target)]
        if target != path:
            print(f"{path} -> {target}", file=sys.stderr)
    fold_modules(source, saved["lab"][str(pipeline / "__init__.py")])
    for path in Path("tests").rglob("*.py"):  # the lab's other tests
        text = path.read_text(encoding="utf-8")
        if new_style(path, text) != text and str(path) not in saved["lab"]:
            path.write_text(new_style(path, text), encoding="utf-8")
    for cache in pipeline.rglob("__pycache__"):
        shutil.rmtree(cache)
    if pipeline.is_dir() and not any(pipeline.rglob("*")):
        shutil.rmtree(pipeline)
    elif pipeline.is_dir():
        print(f"{pipeline} still holds files: move them by hand", file=sys.stderr)
    stash.unlink()
    if conflicts:
        print(f"conflicts to resolve in: {', '.join(conflicts)}", file=sys.stderr)


def fold_modules(source: Path, pipeline_init: str) -> None:
    """The package's __init__.py (the new template's) with the lab's MODULES, in its order."""
    import ast
    import importlib.util

    path = source / "toolkit" / "scaffold.py"
    spec = importlib.util.spec_from_file_location(
        "project_scaffold", path if path.is_file() else TOOLKIT / "scaffold.py"
    )
    scaffold = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = scaffold
    spec.loader.exec_module(scaffold)
    init = source / "__init__.py"
    text = init.read_text(encoding="utf-8")
    assignment = scaffold.find_assignment(pipeline_init, "MODULES")
    modules = scaffold.literal(assignment)
    extra = [
        node
        for node in ast.parse(pipeline_init).body
        if not (isinstance(node, ast.ImportFrom) and node.level == 1)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and node.lineno != assignment.lineno
    ]
    if extra:
        code = "\n".join(ast.get_source_segment(pipeline_init, node) or "" for node in extra)
        print(
            f"pipeline/__init__.py held more than MODULES; move it by hand:\n{code}",
            file=sys.stderr,
        )
    if scaffold.literal(scaffold.find_assignment(text, "MODULES")) == modules:
        return
    text = scaffold.replace_assignment(
        text, "MODULES", scaffold.python_literal("MODULES", modules, tuple_of_names=True)
    )
    imports = [
        node
        for node in ast.parse(text).body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
    ]
    lines = text.splitlines(keepends=True)
    lines[imports[0].lineno - 1 : imports[-1].end_lineno] = [
        f"from . import {m}\n" for m in modules
    ]
    init.write_text("".join(lines), encoding="utf-8")


def main(argv: list[str]) -> int:
    if argv[:1] == ["write-modules"] and len(argv) == 2:
        write_modules(json.loads(argv[1]))
        return 0
    if argv[:1] == ["migrate"] and 2 <= len(argv) <= 4 and argv[2:3] in ([], ["before"], ["after"]):
        migrate(argv[1], *argv[2:3], *map(json.loads, argv[3:]))
        return 0
    if not argv:
        (TEMPLATE / "copier.yml").write_text(copier_yml(), encoding="utf-8")
        return 0
    print(
        "usage: copier_template.py [write-modules CONTEXT | migrate VERSION [before|after]]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
