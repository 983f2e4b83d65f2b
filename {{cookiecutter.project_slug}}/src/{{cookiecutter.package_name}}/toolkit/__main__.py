"""The toolkit on its own, for a DataJoint 2.x package that was not made from the template.

    python -m dj_pipeline_toolkit --pipeline my_pipeline status
    dj-toolkit --pipeline my_pipeline:pipeline declare
    dj-toolkit --pipeline my_pipeline worker --loop 60
    dj-toolkit --pipeline my_pipeline --help       # the commands

`--pipeline MODULE[:ATTRIBUTE]` names the package that builds the lab's `Pipeline` (from
this toolkit) and the attribute holding it: `pipeline` by default, else the Pipeline the
import built last. The current folder is searched first, as `python -m` does. `worker`
runs the worker; any other command is the toolkit's command line (see --help).

(In a project made from the template, `python -m <package>` does all this already.)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .project import Pipeline

USAGE = "%(prog)s --pipeline MODULE[:ATTRIBUTE] {worker,<command>} ..."


class LoadError(Exception):
    """The --pipeline value names no Pipeline of this toolkit."""


def program() -> str:
    """How the user called us: the console script, or `python -m <this package>`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and not name.endswith(".py") else f"python -m {__package__}"


def where(error: BaseException) -> str:
    """' (file:line)' of the innermost frame of an exception, or ''."""
    frames = traceback.extract_tb(error.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load(spec: str) -> Pipeline:
    """The Pipeline that `MODULE[:ATTRIBUTE]` names (imports MODULE)."""
    from . import project  # here: DataJoint is not imported for --help

    name, _, attribute = spec.partition(":")
    if not name or spec.count(":") > 1 or not all(part.isidentifier() for part in name.split(".")):
        raise LoadError(f"--pipeline {spec!r}: give MODULE or MODULE:ATTRIBUTE, e.g. my_pipeline")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` and `python -c` do
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name + ".").startswith(error.name + "."):
            raise LoadError(
                f"--pipeline {spec!r}: no module named {error.name!r} (install the package, "
                "or run this in the folder that holds it)"
            ) from None
        raise LoadError(f"cannot import {name}: {error}{where(error)}") from None
    except Exception as error:  # noqa: BLE001 -- the package's own failure, in one line
        message = " ".join(str(error).split())
        raise LoadError(
            f"cannot import {name}: {type(error).__name__}: {message}{where(error)}"
        ) from None
    found: Any = module
    for part in (attribute or "pipeline").split("."):
        found = getattr(found, part, None)
    if isinstance(found, type(project.pipeline)):  # the toolkit's stand-in for the current one
        found = project._current
    if isinstance(found, project.Pipeline):
        return found
    if attribute:
        if found is None:
            raise LoadError(f"--pipeline {spec!r}: {name} has no attribute {attribute!r}")
        kind = f"{type(found).__module__}.{type(found).__qualname__}"
        raise LoadError(
            f"--pipeline {spec!r}: {name}.{attribute} is a {kind}, not a Pipeline of {__package__}"
        )
    if project._current is not None:
        return project._current  # no `pipeline` attribute: the one the import built last
    raise LoadError(
        f"--pipeline {spec!r}: importing {name} built no Pipeline of {__package__}: build one "
        f"with {__package__}.Pipeline(modules, ...) there, or name it as MODULE:ATTRIBUTE"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program(),
        usage=USAGE,
        description=__doc__.split("\n\n")[0],
        epilog="With --pipeline, --help lists the commands.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help, or the commands")
    parser.add_argument(
        "--pipeline",
        metavar="MODULE[:ATTRIBUTE]",
        help="the package (module) that builds the Pipeline; ATTRIBUTE defaults to `pipeline`",
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The standalone command line (also the `dj-toolkit` command)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.pipeline is None:
        if args.help:
            parser.print_help()
            return 0
        parser.error("--pipeline MODULE[:ATTRIBUTE] is required, e.g. --pipeline my_pipeline")
    try:
        pipeline = load(args.pipeline)
    except LoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = f"{program()} --pipeline {args.pipeline}"
    pipeline.command = command  # what the toolkit's hints tell the user to run
    pipeline.worker_command = f"{command} worker"
    arguments = ["--help"] if args.help else args.arguments
    from . import cli, worker

    if arguments[:1] == ["worker"]:
        return worker.main(pipeline, arguments[1:])
    return cli.main(pipeline, arguments)


if __name__ == "__main__":
    sys.exit(main())
