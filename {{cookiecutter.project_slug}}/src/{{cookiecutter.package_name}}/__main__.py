"""Command line of the pipeline: `python -m <package> --help`."""

import argparse
import getpass
import json
import os
import secrets
import sys
from pathlib import Path

import datajoint as dj
from datajoint.settings import find_config_file

from . import access, activate, auto_tables, promotion, scaffold, schema_names, schema_prefix
from .utils import datajoint_logs_to_stderr


def declare(args: argparse.Namespace) -> int:
    """Create every schema and table that is missing, upstream first; record versions."""
    for module, name in activate().items():
        print(f"{module:>20} -> {name}")
    for table in auto_tables():
        table.jobs.refresh()  # declares the jobs table, so workers need no CREATE privilege
    promotion.record_versions()
    return 0


def versions(args: argparse.Namespace) -> int:
    """Compare SCHEMA_VERSIONS with the versions the database was declared with."""
    mismatches = promotion.version_mismatches()
    for name, (code, database) in mismatches.items():
        print(f"{name}: code {code}, database {database or 'not recorded'}")
    if mismatches:
        print(f"Run `declare` (or migrate) to bring the {schema_prefix()!r} schemas up to date.")
        return 1
    print("The database matches the code's schema versions.")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Show how the schemas under one prefix differ from another's (exit 1 if they do)."""
    target = schema_prefix() if args.to is None else args.to
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
    """Fill every Imported and Computed table, upstream first."""
    tables = auto_tables()
    unknown = set(args.table) - {table.__name__ for table in tables}
    if unknown:
        known = ", ".join(table.__name__ for table in tables)
        print(
            f"error: no auto-populated table {', '.join(sorted(unknown))}; known: {known}",
            file=sys.stderr,
        )
        return 2
    activate()
    failed = 0
    for table in tables:
        if args.table and table.__name__ not in args.table:
            continue
        result = table.populate(reserve_jobs=True, suppress_errors=True)
        errors = result["error_list"]
        failed += len(errors)
        print(f"{table.__name__}: {result['success_count']} made, {len(errors)} failed")
    return 1 if failed else 0


def table_status(table: type[dj.Table], errors_shown: int) -> dict:
    """Progress and job counts of one auto-populated table, with its latest errors."""
    remaining, total = table().progress()
    jobs = table.jobs
    counts = jobs.progress()
    latest = jobs.errors.proj("error_message").to_dicts(
        order_by="completed_time DESC", limit=errors_shown
    )
    return {
        "table": f"{table.__module__.rpartition('.')[2]}.{table.__name__}",
        "done": total - remaining,
        "remaining": remaining,
        "total": total,
        "reserved": counts["reserved"],
        "errors": counts["error"],
        "latest_errors": [
            {
                "key": {k: v for k, v in row.items() if k != "error_message"},
                "message": row["error_message"],
            }
            for row in latest
        ],
    }


def status(args: argparse.Namespace) -> int:
    """Progress of every table, upstream first; exit 1 when any job is in error."""
    activate()
    if args.release_orphans:
        for table in auto_tables():
            table.jobs.refresh(orphan_timeout=args.release_orphans)
    report = [table_status(table, args.errors) for table in auto_tables()]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(
            f"{'table':<32} {'done':>7} {'remaining':>9} {'total':>7} {'reserved':>8} {'errors':>6}"
        )
        for row in report:
            print(
                f"{row['table']:<32} {row['done']:>7} {row['remaining']:>9} {row['total']:>7}"
                f" {row['reserved']:>8} {row['errors']:>6}"
            )
            for error in row["latest_errors"]:
                print(f"    {error['key']}: {error['message']}")
    return 1 if any(row["errors"] for row in report) else 0


def access_grant(args: argparse.Namespace) -> int:
    """Print (or --apply) the SQL that creates a user with a role of access.toml."""
    try:
        statements = access.grant_statements(args.user, args.role, args.prefix)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for statement in statements:
        print(statement.shown() + ";")
    if args.apply:
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
        access.apply(statements, password)
        print(f"Applied: {args.user} is {args.role}.", file=sys.stderr)
    return 0


def access_revoke(args: argparse.Namespace) -> int:
    """Print (or --apply) the SQL that takes a user's role away."""
    prefix = schema_prefix() if args.prefix is None else args.prefix
    statements = access.revoke_statements(args.user, args.role, prefix)
    for statement in statements:
        print(statement.shown() + ";")
    if args.apply:
        access.apply(statements, None)
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
    grant.set_defaults(run=access_grant)
    revoke = actions.add_parser("revoke", help=access_revoke.__doc__)
    revoke.add_argument("user")
    revoke.add_argument("--role", help="PostgreSQL: only this role (default: every role)")
    revoke.set_defaults(run=access_revoke)
    policy = actions.add_parser("policy", help=access_policy.__doc__)
    policy.add_argument("role")
    policy.add_argument("--bucket", help="default: the main store's bucket")
    policy.add_argument("--location", help="default: the main store's location")
    policy.set_defaults(run=access_policy)
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
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    user = args.user or input("Database user: ")
    password = os.environ.get("DJ_PASS") or getpass.getpass("Database password: ")
    for name, value in (("database.user", user), ("database.password", password)):
        path = secrets_dir / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(value)
        path.chmod(0o600)  # also when the file existed with wider permissions
    print(f"Saved database.user and database.password in {secrets_dir}")
    return 0


def names(args: argparse.Namespace) -> int:
    """Print the database schema name of every module (no database needed)."""
    for module, name in schema_names().items():
        print(f"{module:>20} -> {name}")
    return 0


def add_schema(args: argparse.Namespace) -> int:
    """Write one more schema module and its test, downstream of existing schemas."""
    package_dir = Path(__file__).resolve().parent
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
            blob="<blob@main>" if "main" in dj.config.stores else "<blob>",
            description=args.description,
            role=args.role,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print("Listed in __init__.py and version.py; edit the new table, then run `declare`.")
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
    activate()
    try:
        dashboard.serve(args.host, args.port, args.allow_retry, args.refresh)
    except OSError as error:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 2
    return 0


def watch(args: argparse.Namespace) -> int:
    """Report new job errors to the webhook and/or e-mail of datajoint.json's "alerts"."""
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
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("names", help=names.__doc__).set_defaults(run=names)
    commands.add_parser("declare", help=declare.__doc__).set_defaults(run=declare)
    populate_parser = commands.add_parser("populate", help=populate.__doc__)
    populate_parser.add_argument("table", nargs="*", help="only these tables (class names)")
    populate_parser.set_defaults(run=populate)
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
    status_parser.set_defaults(run=status)
    commands.add_parser("versions", help=versions.__doc__).set_defaults(run=versions)
    compare_parser = commands.add_parser("compare", help=compare.__doc__)
    compare_parser.add_argument("source", help="prefix to compare, e.g. dev_my_pipeline_")
    compare_parser.add_argument("--to", help="prefix to compare with (default: the one in force)")
    compare_parser.set_defaults(run=compare)
    add_parser = commands.add_parser("add-schema", help=add_schema.__doc__)
    add_parser.add_argument("name", help="schema (module) name, e.g. behavior")
    add_parser.add_argument("--upstream", default="", help="comma-separated upstream schemas")
    add_parser.add_argument("--description", default="", help="one line: the module docstring")
    add_parser.add_argument(
        "--role", default="", choices=["", "acquisition", "processing", "analysis"]
    )
    add_parser.set_defaults(run=add_schema)
    add_access_parser(commands)
    serve_parser = commands.add_parser("serve", help=serve.__doc__)
    serve_parser.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free)")
    serve_parser.add_argument(
        "--allow-retry", action="store_true", help="let the page re-queue failed jobs"
    )
    serve_parser.add_argument(
        "--refresh", type=float, default=5.0, metavar="SECONDS", help="page refresh period (5)"
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
    login_parser.set_defaults(run=login)
    return parser


def main(argv: list[str] | None = None) -> int:
    datajoint_logs_to_stderr()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except dj.DataJointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
