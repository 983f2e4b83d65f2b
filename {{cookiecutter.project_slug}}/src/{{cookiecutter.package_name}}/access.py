"""Team access control: the roles of access.toml as database grants and bucket policies.

Each role in access.toml reads, writes, develops or manages kinds of schemas; a schema's
kind is its role in the pipeline (SCHEMA_ROLES, overridable in access.toml). From that:

- read    -> SELECT;
- write   -> SELECT, INSERT, UPDATE, DELETE, plus SELECT on every upstream schema (foreign
             keys are checked there) and DELETE on every downstream schema (deletes cascade);
             the schemas' jobs tables live inside them, so writers can populate;
- develop -> every privilege on the development schemas (``dev_<prefix>``), CREATE included;
- manage  -> every privilege on the production schemas, with GRANT.

MySQL and MariaDB get grants per user and database, each database name escaped so it
matches that database alone; PostgreSQL gets one native role per access role and schema
set, granted to users. A grant is exact: it also takes away what the role does not have.
Identifiers and strings are escaped by the drivers; passwords are never printed nor
logged, and the servers receive hashes computed here: PostgreSQL a SCRAM-SHA-256 verifier,
MariaDB a mysql_native_password hash (see `password_secret`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datajoint as dj
from datajoint.settings import find_config_file

from . import PIPELINE, SCHEMA_ROLES, schema_prefix

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

KINDS = ("acquisition", "processing", "analysis")


def _driver_errors() -> tuple[type[Exception], ...]:
    """The errors of the installed database drivers."""
    found: list[type[Exception]] = []
    for module, name in (("pymysql", "Error"), ("psycopg2", "Error")):
        with contextlib.suppress(ImportError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


DRIVER_ERRORS = _driver_errors()
#: The PostgreSQL advisory lock that serializes access changes (any number, fixed).
ADVISORY_LOCK = 0x44_4A_41_43


def load_policy(path: Path | None = None) -> dict[str, Any]:
    """access.toml, next to datajoint.json."""
    if path is None:
        config_file = find_config_file()
        path = (config_file.parent if config_file else Path.cwd()) / "access.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


def schema_kinds(policy: dict[str, Any]) -> dict[str, str]:
    """Each schema's kind: its pipeline role, unless access.toml overrides it."""
    return {**SCHEMA_ROLES, **policy.get("schemas", {})}


def closure(names: set[str], edges: dict[str, set[str]]) -> set[str]:
    """`names` and everything reachable from them along `edges`."""
    found, todo = set(names), list(names)
    while todo:
        for other in edges.get(todo.pop(), ()):
            if other not in found:
                found.add(other)
                todo.append(other)
    return found


def privileges(role: str, policy: dict[str, Any]) -> dict[str, set[str]]:
    """Schema (short name) -> privileges of `role` on the production schemas."""
    spec = policy["roles"][role]
    kinds = schema_kinds(policy)
    upstream = {name: set(parents) for name, parents in PIPELINE.items()}
    downstream: dict[str, set[str]] = {name: set() for name in PIPELINE}
    for name, parents in PIPELINE.items():
        for parent in parents:
            downstream[parent].add(name)
    of_kind = {kind: {name for name, k in kinds.items() if k == kind} for kind in KINDS}
    read = set().union(*(of_kind[kind] for kind in spec.get("read", [])))
    write = set().union(*(of_kind[kind] for kind in spec.get("write", [])))
    result: dict[str, set[str]] = {}
    for name in read | closure(write, upstream):
        result.setdefault(name, set()).add("SELECT")
    for name in write:
        result[name] |= {"INSERT", "UPDATE", "DELETE"}
    for name in closure(write, downstream):
        result.setdefault(name, set()).update({"SELECT", "DELETE"})
    if spec.get("manage"):
        return {name: {"ALL"} for name in PIPELINE}
    return {name: result[name] for name in PIPELINE if name in result}  # upstream first


# ---------------------------------------------------------------------------- the role table
#: What the role table of docs/access.md states, row by row; `abilities` derives each cell
#: from a role of access.toml, and the template's tests try every cell on both servers.
OPERATIONS = (
    "fetch from every schema",
    "insert into an acquisition schema",
    "insert into a processing schema",
    "insert into an analysis schema",
    "populate a processing schema",
    "populate an analysis schema",
    "delete upstream, cascading downstream",
    "declare a table in a production schema",
    "declare the pipeline in the development set",
    "drop a production table",
    "grant access to someone else",
    "fetch from another project's schemas",
    "declare a table in another project's schemas",
)
BACKENDS = {"mysql": "MySQL", "postgresql": "PostgreSQL"}


def abilities(role: str, policy: dict[str, Any], backend: str) -> dict[str, bool]:
    """Operation -> whether `role` may do it on `backend` (mysql or postgresql)."""
    spec = policy["roles"][role]
    manage, write = bool(spec.get("manage")), set(spec.get("write", []))
    kinds = set(schema_kinds(policy).values())
    return {
        "fetch from every schema": manage or kinds <= set(spec.get("read", [])) | write,
        "insert into an acquisition schema": manage or "acquisition" in write,
        "insert into a processing schema": manage or "processing" in write,
        "insert into an analysis schema": manage or "analysis" in write,
        "populate a processing schema": manage or "processing" in write,
        "populate an analysis schema": manage or "analysis" in write,
        # DELETE reaches every downstream schema of a writer (see `privileges`).
        "delete upstream, cascading downstream": manage or "acquisition" in write,
        "declare a table in a production schema": manage,
        "declare the pipeline in the development set": manage or bool(spec.get("develop")),
        # PostgreSQL lets only a table's owner (whoever declared it) drop it.
        "drop a production table": manage and backend == "mysql",
        "grant access to someone else": manage,
        "fetch from another project's schemas": False,
        "declare a table in another project's schemas": False,
    }


def role_table(policy: dict[str, Any]) -> str:
    """The role table of docs/access.md, in Markdown."""
    roles = list(policy["roles"])
    cells = {
        role: {backend: abilities(role, policy, backend) for backend in BACKENDS} for role in roles
    }
    lines = [
        "| Operation | " + " | ".join(roles) + " |",
        "|-----------|" + "|".join("-" * (len(role) + 2) for role in roles) + "|",
    ]
    for operation in OPERATIONS:
        row = []
        for role in roles:
            allowed = {backend for backend, can in cells[role].items() if can[operation]}
            if len(allowed) == 1:
                row.append(BACKENDS[allowed.pop()] + " only")
            else:
                row.append("yes" if allowed else "no")
        lines.append(f"| {operation} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- statements
class AccessError(Exception):
    """A grant or revoke that could not be applied (its message never holds the password)."""


@dataclass(frozen=True)
class Statement:
    """One SQL statement, its identifiers and strings already escaped by the driver.

    A `secret` statement ends with the password (MariaDB) or its SCRAM verifier
    (PostgreSQL), sent as a query parameter. `undo` restores what the statement changes
    (MariaDB, which cannot roll grants back); `optional` statements may find nothing to do.
    """

    sql: str
    secret: bool = False
    undo: tuple[str, ...] = ()
    optional: bool = False

    def shown(self) -> str:
        return f"{self.sql} '<password>'" if self.secret else self.sql


@dataclass
class Plan:
    """The statements that bring one user to exactly one role (or to none)."""

    user: str
    backend: str  # "postgresql", "mariadb" or "mysql"
    statements: list[Statement]


def development_prefix(prefix: str) -> str:
    return prefix if prefix.startswith("dev_") else f"dev_{prefix}"


def database_name() -> str:
    return dj.config.database.name or "postgres"


def _cursor(connection: dj.Connection) -> Any:
    """A cursor of the driver (pymysql or psycopg2): their escaping needs one."""
    return connection.query("SELECT 1")


def _rows(connection: dj.Connection, query: str, *args: Any) -> list[tuple]:
    return list(connection.query(query, args=args).fetchall())


def check_user(user: str) -> None:
    if not user or "\x00" in user or len(user) > 63 or user != user.strip():
        raise ValueError(
            f"invalid user name {user!r}: 1 to 63 characters, no NUL, no leading or trailing blank"
        )


# ---------------------------------------------------------------------------- MySQL, MariaDB
#: Database-level privileges of MariaDB, by their column in mysql.db.
MYSQL_PRIVILEGES = {
    "Select_priv": "SELECT",
    "Insert_priv": "INSERT",
    "Update_priv": "UPDATE",
    "Delete_priv": "DELETE",
    "Create_priv": "CREATE",
    "Drop_priv": "DROP",
    "References_priv": "REFERENCES",
    "Index_priv": "INDEX",
    "Alter_priv": "ALTER",
    "Create_tmp_table_priv": "CREATE TEMPORARY TABLES",
    "Lock_tables_priv": "LOCK TABLES",
    "Create_view_priv": "CREATE VIEW",
    "Show_view_priv": "SHOW VIEW",
    "Create_routine_priv": "CREATE ROUTINE",
    "Alter_routine_priv": "ALTER ROUTINE",
    "Execute_priv": "EXECUTE",
    "Event_priv": "EVENT",
    "Trigger_priv": "TRIGGER",
    "Delete_history_priv": "DELETE HISTORY",
}
#: What an admin needs beyond its schemas to onboard and offboard users. CREATE USER is
#: global on MariaDB; the mysql tables are read to plan exact grants (no password hashes).
ADMIN_TOOLS = (
    ("CREATE USER", "*.*"),
    ("SELECT", "`mysql`.`db`"),
    ("SELECT (`User`, `Host`)", "`mysql`.`global_priv`"),
)

Grant = tuple[frozenset[str], bool]  # privileges on one database, and GRANT OPTION
NO_GRANT: Grant = (frozenset(), False)


def mysql_pattern(name: str) -> str:
    """A database name as the GRANT pattern that matches it alone: `_` and `%` escaped."""
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def mysql_on(pattern: str) -> str:
    return "`" + pattern.replace("`", "``") + "`.*"


def mysql_desired(role: str | None, policy: dict[str, Any], prefix: str) -> dict[str, Grant]:
    r"""Database pattern -> the grant `role` has there; every schema of this project is listed.

    Development schemas are granted one by one, like production ones: a wildcard such as
    ``dev\_my\_pipeline\_%`` would also cover another project whose prefix starts with ours.
    """
    everything = frozenset(MYSQL_PRIVILEGES.values())
    development = development_prefix(prefix)
    names = [*PIPELINE, "_versions"]
    desired = {mysql_pattern(p + name): NO_GRANT for p in (prefix, development) for name in names}
    if role is None:
        return desired
    spec = policy["roles"][role]
    manage = bool(spec.get("manage"))
    for name, granted in privileges(role, policy).items():
        privileges_ = everything if "ALL" in granted else frozenset(granted)
        desired[mysql_pattern(prefix + name)] = (privileges_, manage)
    versions = (everything, True) if manage else (frozenset({"SELECT"}), False)
    desired[mysql_pattern(prefix + "_versions")] = versions
    if manage or spec.get("develop"):
        desired |= {mysql_pattern(development + name): (everything, manage) for name in names}
    return desired


def mysql_grant_sql(grant: Grant, pattern: str, account: str) -> list[str]:
    granted, option = grant
    if grant == NO_GRANT:
        return []
    listed = ", ".join(p for p in MYSQL_PRIVILEGES.values() if p in granted) or "USAGE"
    if granted == frozenset(MYSQL_PRIVILEGES.values()):
        listed = "ALL PRIVILEGES"
    with_option = " WITH GRANT OPTION" if option else ""
    return [f"GRANT {listed} ON {mysql_on(pattern)} TO {account}{with_option}"]


def mysql_revoke_sql(grant: Grant, pattern: str, account: str) -> list[str]:
    granted, option = grant
    on = f"ON {mysql_on(pattern)} FROM {account}"
    return [f"REVOKE ALL PRIVILEGES {on}"] * bool(granted) + [f"REVOKE GRANT OPTION {on}"] * option


def mysql_plan(
    connection: dj.Connection, user: str, role: str | None, policy: dict[str, Any], prefix: str
) -> Plan:
    """Statements that give `user` exactly `role` on this project's schemas (None: nothing).

    The current grants are read from mysql.db and only what differs is changed; each
    change carries its undo, so that `apply` can restore the previous state on a failure.
    """
    account = _cursor(connection).connection.escape(user) + "@'%'"
    (version,) = _rows(connection, "SELECT VERSION()")[0]
    backend = "mariadb" if "mariadb" in version.lower() else "mysql"
    identified = "IDENTIFIED BY PASSWORD" if backend == "mariadb" else "IDENTIFIED BY"
    query = "SELECT 1 FROM mysql.global_priv WHERE User = %s AND Host = '%%'"
    exists = bool(_rows(connection, query, user))
    current: dict[str, Grant] = {}
    query = "SELECT * FROM mysql.db WHERE User = %s AND Host = '%%'"
    for row in connection.query(query, args=(user,), as_dict=True):
        granted = frozenset(p for column, p in MYSQL_PRIVILEGES.items() if row[column] == "Y")
        current[row["Db"]] = (granted, row["Grant_priv"] == "Y")
    desired = mysql_desired(role, policy, prefix)
    legacy = mysql_pattern(development_prefix(prefix)) + "%"  # the former shared wildcard
    desired.setdefault(legacy, NO_GRANT)
    statements: list[Statement] = []
    if role is not None and not exists:
        create = f"CREATE USER {account} {identified}"
        statements.append(Statement(create, secret=True, undo=(f"DROP USER {account}",)))
    for pattern, new in desired.items():
        old = current.get(pattern, NO_GRANT)
        if old == new:
            continue
        forward = mysql_revoke_sql(old, pattern, account) + mysql_grant_sql(new, pattern, account)
        undo = mysql_revoke_sql(new, pattern, account) + mysql_grant_sql(old, pattern, account)
        statements.append(Statement(forward[0], undo=tuple(undo)))
        statements += [Statement(sql) for sql in forward[1:]]
    # The admin's tools, kept while the account manages another project's schemas.
    admin_here = any(current.get(pattern, NO_GRANT)[1] for pattern in desired)
    admin_elsewhere = any(grant[1] for db, grant in current.items() if db not in desired)
    admin_now = role is not None and bool(policy["roles"][role].get("manage"))
    grants = [f"GRANT {what} ON {on} TO {account} WITH GRANT OPTION" for what, on in ADMIN_TOOLS]
    revokes = [f"REVOKE {what}, GRANT OPTION ON {on} FROM {account}" for what, on in ADMIN_TOOLS]
    if admin_now and not admin_here:
        for grant, revoke in zip(grants, revokes, strict=True):
            statements.append(Statement(grant, undo=() if admin_elsewhere else (revoke,)))
    elif exists and admin_here and not admin_now and not admin_elsewhere:
        for grant, revoke in zip(grants, revokes, strict=True):
            statements.append(Statement(revoke, undo=(grant,), optional=True))
    if role is not None and exists:  # last: nothing after it can fail
        statements.append(Statement(f"ALTER USER {account} {identified}", secret=True))
    return Plan(user, backend, statements)


# ---------------------------------------------------------------------------- PostgreSQL
def group_role(role: str, prefix: str) -> str:
    """The PostgreSQL role that carries an access role for one schema set."""
    return f"{prefix}{role}"


def postgres_plan(
    connection: dj.Connection, user: str, role: str | None, policy: dict[str, Any], prefix: str
) -> Plan:
    """Statements, run in one transaction, that give `user` exactly `role` (None: nothing).

    Run by a superuser, they also (re)create every access role of this schema set with
    exactly the privileges of access.toml, default privileges included. Run by the
    project's admin (CREATEROLE), they only create the user and set its membership.
    """
    from psycopg2 import sql

    cursor = _cursor(connection)

    def render(template: str, *identifiers: str) -> str:
        return sql.SQL(template).format(*map(sql.Identifier, identifiers)).as_string(cursor)

    (superuser,) = _rows(connection, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[
        0
    ]
    found = _rows(
        connection, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", user
    )
    groups = {name: group_role(name, prefix) for name in policy["roles"]}
    if user in groups.values():
        raise ValueError(f"invalid user name {user!r}: it is the name of an access role")
    if found and found[0][0]:
        raise ValueError(f"refusing to change {user!r}: it is a superuser")
    existing = {
        name
        for (name,) in _rows(
            connection,
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
            list(groups.values()),
        )
    }
    member_of = {
        name
        for (name,) in _rows(
            connection,
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            user,
        )
    }
    schemas = {name: prefix + name for name in PIPELINE} | {"": prefix + "_versions"}
    present = {
        name
        for (name,) in _rows(
            connection,
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
            list(schemas.values()),
        )
    }
    statements: list[str] = []
    table_grants = {}
    for name in policy["roles"]:
        granted = privileges(name, policy)
        granted[""] = {"ALL"} if policy["roles"][name].get("manage") else {"SELECT"}
        # PostgreSQL shows keys and constraints only to roles with more than SELECT on a
        # table; REFERENCES lets readers see primary keys, which joins and populate need.
        table_grants[name] = {
            schemas[s]: "ALL" if "ALL" in g else ", ".join(sorted(g | {"REFERENCES"}))
            for s, g in granted.items()
        }
    if superuser and role is not None:
        missing = sorted(set(schemas.values()) - present)
        if missing:
            raise ValueError(
                f"schemas {', '.join(missing)} do not exist: run `declare` for prefix {prefix!r} first"
            )
        database = database_name()
        statements += [
            render("CREATE ROLE {} NOLOGIN", group)
            for group in groups.values()
            if group not in existing
        ]
        for name, group in groups.items():
            spec = policy["roles"][name]
            option = " WITH GRANT OPTION" if spec.get("manage") else ""
            for schema in schemas.values():
                statements += [
                    render("REVOKE ALL ON SCHEMA {} FROM {}", schema, group),
                    render("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}", schema, group),
                    render(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} REVOKE ALL ON TABLES FROM {}",
                        schema,
                        group,
                    ),
                ]
            for schema, tables in table_grants[name].items():
                usage = "ALL" if tables == "ALL" else "USAGE"
                statements += [
                    render("GRANT " + usage + " ON SCHEMA {} TO {}" + option, schema, group),
                    render(
                        "GRANT " + tables + " ON ALL TABLES IN SCHEMA {} TO {}" + option,
                        schema,
                        group,
                    ),
                    render(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT "
                        + tables
                        + " ON TABLES TO {}"
                        + option,
                        schema,
                        group,
                    ),
                ]
            creates = spec.get("develop") or spec.get("manage")
            statements.append(
                render(
                    (
                        "GRANT CREATE ON DATABASE {} TO {}"
                        if creates
                        else "REVOKE CREATE ON DATABASE {} FROM {}"
                    ),
                    database,
                    group,
                )
            )
            if not spec.get("manage"):  # the admin may grant it (PostgreSQL 16 wants ADMIN OPTION)
                for admin, admin_group in groups.items():
                    if policy["roles"][admin].get("manage"):
                        statements.append(
                            render("GRANT {} TO {} WITH ADMIN OPTION", group, admin_group)
                        )
    elif role is not None and set(groups.values()) - existing:
        raise ValueError(
            f"the access roles of prefix {prefix!r} do not exist yet: a superuser runs "
            "`access grant` once to create them"
        )
    plan = Plan(user, "postgresql", [Statement(s) for s in statements])
    admin_groups = {g for n, g in groups.items() if policy["roles"][n].get("manage")}
    if role is None:
        plan.statements += [
            Statement(render("REVOKE {} FROM {}", g, user))
            for g in groups.values()
            if g in member_of
        ]
        if found and found[0][1] and admin_groups & member_of:
            plan.statements.append(Statement(render("ALTER ROLE {} NOCREATEROLE", user)))
        return plan
    spec = policy["roles"][role]
    verb = "ALTER" if found else "CREATE"
    plan.statements.append(
        Statement(render(verb + " ROLE {} WITH LOGIN PASSWORD", user), secret=True)
    )
    if spec.get("manage"):
        plan.statements.append(Statement(render("ALTER ROLE {} CREATEROLE", user)))
    elif found and found[0][1] and admin_groups & member_of:
        plan.statements.append(Statement(render("ALTER ROLE {} NOCREATEROLE", user)))
    plan.statements += [
        Statement(render("REVOKE {} FROM {}", g, user))
        for name, g in groups.items()
        if g in member_of and name != role
    ]
    if groups[role] not in member_of:
        plan.statements.append(Statement(render("GRANT {} TO {}", groups[role], user)))
    # Tables this user declares later must be readable by the roles that read them.
    defaults = []
    if spec.get("manage"):
        for name, group in groups.items():
            option = " WITH GRANT OPTION" if policy["roles"][name].get("manage") else ""
            for schema, tables in table_grants[name].items():
                defaults.append(
                    render(
                        "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT "
                        + tables
                        + " ON TABLES TO {}"
                        + option,
                        user,
                        schema,
                        group,
                    )
                )
    if spec.get("develop"):  # a shared development set: what one developer declares, all use
        sharing = [
            g
            for n, g in groups.items()
            if policy["roles"][n].get("develop") or policy["roles"][n].get("manage")
        ]
        for group in sharing:
            defaults += [
                render(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT USAGE, CREATE ON SCHEMAS TO {}",
                    user,
                    group,
                ),
                render(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT ALL ON TABLES TO {}", user, group
                ),
            ]
    if defaults and not superuser:  # only a member of a role may set its default privileges
        defaults = [
            render("GRANT {} TO CURRENT_USER", user),
            *defaults,
            render("REVOKE {} FROM CURRENT_USER", user),
        ]
    plan.statements += [Statement(s) for s in defaults]
    return plan


# ---------------------------------------------------------------------------- entry points
def plan_access(user: str, role: str | None, prefix: str | None = None) -> Plan:
    """What `access grant` (a role) or `access revoke` (None) does, read from the server."""
    check_user(user)
    policy = load_policy()
    if role is not None and role not in policy["roles"]:
        raise ValueError(f"unknown role {role!r}; access.toml defines {', '.join(policy['roles'])}")
    prefix = schema_prefix() if prefix is None else prefix
    connection = dj.conn()
    if connection.adapter.backend == "postgresql":
        return postgres_plan(connection, user, role, policy, prefix)
    return mysql_plan(connection, user, role, policy, prefix)


def _secret_forms(password: str, connection: dj.Connection) -> list[str]:
    """The password as it may appear in a driver's or server's message."""
    forms = {password, password.replace("'", "''"), repr(password)[1:-1]}
    with contextlib.suppress(AttributeError):  # pymysql's escaping (psycopg2 has none)
        forms.add(_cursor(connection).connection.escape_string(password))
    return sorted((form for form in forms if form), key=len, reverse=True)


def password_secret(plan: Plan, password: str, connection: dj.Connection) -> str:
    """What the server receives for a password: never the clear text, where it can be avoided.

    PostgreSQL gets the SCRAM-SHA-256 verifier (RFC 5803), computed here by libpq. MariaDB
    gets its mysql_native_password hash, of the Latin-1 bytes pymysql sends when logging in
    (the server would hash the UTF-8 bytes, and non-ASCII passwords would never match).
    MySQL hashes the password itself, with its default mechanism.
    """
    if plan.backend == "postgresql":
        from psycopg2.extensions import encrypt_password

        return encrypt_password(password, plan.user, _cursor(connection), "scram-sha-256")
    try:
        encoded = password.encode("latin-1" if plan.backend == "mariadb" else "ascii")
    except UnicodeEncodeError:
        charset = "Latin-1" if plan.backend == "mariadb" else "ASCII"
        raise AccessError(
            f"the password has characters outside {charset}, which DataJoint's MySQL driver "
            "(pymysql) cannot log in with; choose another; nothing was changed"
        ) from None
    if plan.backend == "mysql":
        return password
    return "*" + hashlib.sha1(hashlib.sha1(encoded).digest()).hexdigest().upper()


def apply(plan: Plan, password: str | None) -> None:
    """Run a plan with the configured (administrator) connection: all of it, or none of it.

    PostgreSQL runs it in one transaction. MariaDB commits each grant at once, so a failed
    step is followed by the undo of every step before it, which restores the previous state.
    """
    connection = dj.conn()
    secret = None if password is None else password_secret(plan, password, connection)

    def run(statement: Statement) -> None:
        if statement.secret:
            connection.query(statement.sql.replace("%", "%%") + " %s", args=(secret,))
        else:
            connection.query(statement.sql, args=None)  # no parameters: sent as it is

    started: list[Statement] = []
    try:
        if plan.backend == "postgresql":
            for attempt in range(3):
                try:
                    with connection.transaction:
                        # One access change at a time: PostgreSQL refuses concurrent GRANTs
                        # on one object ("tuple concurrently updated").
                        connection.query("SELECT pg_advisory_xact_lock(%s)", args=(ADVISORY_LOCK,))
                        for statement in plan.statements:
                            started.append(statement)
                            run(statement)
                    return
                except (dj.DataJointError, *DRIVER_ERRORS) as error:
                    # A GRANT from elsewhere on the same object, at the same time.
                    if "tuple concurrently updated" not in str(error) or attempt == 2:
                        raise
                    started.clear()
                    time.sleep(random.uniform(0.1, 1.0))
        for statement in plan.statements:
            started.append(statement)
            try:
                run(statement)
            except (dj.DataJointError, *DRIVER_ERRORS):
                if not statement.optional:
                    raise
                started.pop()
    except (dj.DataJointError, *DRIVER_ERRORS) as error:
        message = str(error).strip()
        for form in _secret_forms(password, connection) if password else []:
            message = message.replace(form, "<password>")
        if plan.backend != "postgresql":
            for statement in reversed(started):
                for undo in statement.undo:
                    with contextlib.suppress(dj.DataJointError, *DRIVER_ERRORS):
                        connection.query(undo, args=None)  # fails where nothing was applied
        failed = started[-1].shown() if started else "?"
        raise AccessError(f"{failed}: {message}; nothing was changed") from None


def bucket_policy(role: str, bucket: str, location: str, prefix: str | None = None) -> dict:
    """An S3/MinIO bucket policy whose object rights match the role's database rights.

    Objects live under ``<location>/_hash/<schema>/`` and ``<location>/_schema/<schema>/``
    (DataJoint's layout); reading needs SELECT, writing INSERT or UPDATE, deleting DELETE.
    """
    policy = load_policy()
    prefix = schema_prefix() if prefix is None else prefix
    actions = {"SELECT": "s3:GetObject", "INSERT": "s3:PutObject", "UPDATE": "s3:PutObject"}
    actions["DELETE"] = "s3:DeleteObject"
    by_action: dict[str, list[str]] = {}
    for name, granted in privileges(role, policy).items():
        wanted = set(actions.values()) if "ALL" in granted else {actions[g] for g in granted}
        for action in wanted:
            by_action.setdefault(action, []).extend(
                f"arn:aws:s3:::{bucket}/{location}/{area}/{prefix}{name}/*"
                for area in ("_hash", "_schema")
            )
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ListProjectObjects",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [f"{location}/*"]}},
        }
    ]
    statements += [
        {
            "Sid": action.split(":")[1],
            "Effect": "Allow",
            "Action": [action],
            "Resource": sorted(resources),
        }
        for action, resources in sorted(by_action.items())
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def audit_trail(table: type[dj.Table]) -> list[dict[str, Any]]:
    """Each row's key with who entered it, from where and when (DataJoint provenance)."""
    adapter = table.connection.adapter
    columns = ", ".join(adapter.quote_identifier(name) for name in [*table.primary_key, "_prov"])
    cursor = table.connection.query(f"SELECT {columns} FROM {table.full_table_name}")
    rows = []
    for *key, provenance in cursor.fetchall():
        entry = dict(zip(table.primary_key, key, strict=True))
        entry["provenance"] = json.loads(provenance) if isinstance(provenance, str) else provenance
        rows.append(entry)
    return rows
