"""Team access control: the roles of access.toml as database grants and bucket policies.

Each role in access.toml reads, writes, develops or manages kinds of schemas; a schema's
kind is its role in the pipeline (pipeline.roles, overridable in access.toml). From that:

- read    -> SELECT;
- write   -> SELECT, INSERT, UPDATE, DELETE, plus SELECT on every upstream schema (foreign
             keys are checked there) and DELETE on every downstream schema (deletes cascade);
             the schemas' jobs tables live inside them, so writers can populate;
- develop -> every privilege on the development schemas (``dev_<prefix>``), CREATE included;
- manage  -> every privilege on the production schemas, and the access routines.

The admin (manage) gets no server-wide right: MariaDB's CREATE USER and PostgreSQL 15's
CREATEROLE each let their holder take any other account, and so the server, over. A server
administrator's `access grant` installs definer-rights routines in ``<prefix>_access``
that create, grant, demote and drop the accounts `access grant` made, on the project's
schemas only; an admin's `access grant` calls them (see docs/access.md).

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
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datajoint as dj
from datajoint.settings import find_config_file

from .project import ROLES, pipeline

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

KINDS = ROLES  # a schema's kind is its role, unless access.toml says otherwise


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
    return {**pipeline.roles, **policy.get("schemas", {})}


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
    upstream = {name: set(parents) for name, parents in pipeline.graph.items()}
    downstream: dict[str, set[str]] = {name: set() for name in pipeline.graph}
    for name, parents in pipeline.graph.items():
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
        return {name: {"ALL"} for name in pipeline.graph}
    return {name: result[name] for name in pipeline.graph if name in result}  # upstream first


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
    """A grant or revoke that could not be planned or applied (never holding the password)."""


@dataclass(frozen=True)
class Statement:
    """One SQL statement, its identifiers and strings already escaped by the driver.

    A `secret` statement is followed by the password hash (MariaDB), the password (MySQL)
    or its SCRAM verifier (PostgreSQL), sent as a query parameter, then by `close`.
    `undo` restores what the statement changes (MariaDB, which cannot roll grants back);
    `optional` statements may find nothing to do.
    """

    sql: str
    secret: bool = False
    undo: tuple[str, ...] = ()
    optional: bool = False
    close: str = ""

    def shown(self) -> str:
        return f"{self.sql} '<password>'{self.close}" if self.secret else self.sql


@dataclass
class Plan:
    """The statements that bring one user to exactly one role (or to none)."""

    user: str
    backend: str  # "postgresql", "mariadb" or "mysql"
    statements: list[Statement]


def development_prefix(prefix: str) -> str:
    return prefix if prefix.startswith("dev_") else f"dev_{prefix}"


def access_schema(prefix: str) -> str:
    """The schema of the access routines and of the register of this project's accounts."""
    return f"{prefix}_access"


def database_name() -> str:
    return dj.config.database.name or "postgres"


def _cursor(connection: dj.Connection) -> Any:
    """A cursor of the driver (pymysql or psycopg2): their escaping needs one."""
    return connection.query("SELECT 1")


def _rows(connection: dj.Connection, query: str, *args: Any) -> list[tuple]:
    return list(connection.query(query, args=args).fetchall())


def _digest(statements: list[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()


def check_user(user: str) -> None:
    if not user or "\x00" in user or len(user) > 63 or user != user.strip():
        raise ValueError(
            f"invalid user name {user!r}: 1 to 63 characters, no NUL, no leading or trailing blank"
        )


def _refusal(connection: dj.Connection, call: str, user: str, needs: str) -> str | None:
    """The access routines' verdict on `user`: None (a project account), 'absent' or why not."""
    try:
        return _rows(connection, f"SELECT {call.replace('%', '%%')}(%s)", user)[0][0]
    except (dj.DataJointError, *DRIVER_ERRORS):
        account = _rows(connection, "SELECT CURRENT_USER")[0][0]
        raise AccessError(f"{account} may not manage access here: it needs {needs}") from None


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
#: Global rights (with GRANT OPTION) of the account that installs the access procedures;
#: they run with its rights, so an admin needs none of them.
INSTALLER_RIGHTS = (
    "CREATE USER",
    "SELECT",
    "INSERT",
    "DELETE",
    "CREATE",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "CREATE VIEW",
)
#: What an admin holds on the access schema: its procedures and the grants of its accounts.
ADMIN_ACCESS = frozenset({"SELECT", "EXECUTE"})
#: What former versions gave admins, server-wide: taken away when a superuser grants again.
FORMER_ADMIN_TOOLS = (
    "REVOKE CREATE USER, GRANT OPTION ON *.* FROM {}",
    "REVOKE SELECT, GRANT OPTION ON `mysql`.`db` FROM {}",
    "REVOKE SELECT (`User`, `Host`), GRANT OPTION ON `mysql`.`global_priv` FROM {}",
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
    Nobody gets GRANT OPTION: admins grant through the access procedures, which check that
    the account is one of the project's.
    """
    everything = frozenset(MYSQL_PRIVILEGES.values())
    development = development_prefix(prefix)
    names = [*pipeline.graph, "_versions"]
    desired = {mysql_pattern(p + name): NO_GRANT for p in (prefix, development) for name in names}
    desired[mysql_pattern(access_schema(prefix))] = NO_GRANT
    if role is None:
        return desired
    spec = policy["roles"][role]
    manage = bool(spec.get("manage"))
    for name, granted in privileges(role, policy).items():
        privileges_ = everything if "ALL" in granted else frozenset(granted)
        desired[mysql_pattern(prefix + name)] = (privileges_, False)
    versions = everything if manage else frozenset({"SELECT"})
    desired[mysql_pattern(prefix + "_versions")] = (versions, False)
    if manage or spec.get("develop"):
        desired |= {mysql_pattern(development + name): (everything, False) for name in names}
    if manage:
        desired[mysql_pattern(access_schema(prefix))] = (ADMIN_ACCESS, False)
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


# The access procedures: SQL SECURITY DEFINER, so they run with the rights of the account
# that installed them, and refuse every account that is not one of the project's (made by
# `access grant`, and holding no right outside the project) and every other database.
# DataJoint's sql_mode (strict, backslash escapes) is stored with them: QUOTE() and the
# privilege SET rely on it.
MYSQL_NAME = "VARCHAR(128) CHARACTER SET utf8mb3 COLLATE utf8mb3_bin"  # as mysql.db's columns
MYSQL_DB = "VARCHAR(64) CHARACTER SET utf8mb3 COLLATE utf8mb3_bin"
MYSQL_SET = "SET(" + ", ".join(f"'{p}'" for p in MYSQL_PRIVILEGES.values()) + ")"
MYSQL_REFUSED = "SIGNAL SQLSTATE '42000' SET MYSQL_ERRNO = 1227, MESSAGE_TEXT ="
MYSQL_ROUTINES = (
    """CREATE TABLE IF NOT EXISTS {a}.accounts (name {name} PRIMARY KEY)
    COMMENT 'The accounts made by access grant: the only ones an admin may change'""",
    """CREATE TABLE IF NOT EXISTS {a}.schemas (pattern {db} PRIMARY KEY, allowed {set} NOT NULL)
    COMMENT 'The databases of this project and what may be granted there'""",
    "CREATE TABLE IF NOT EXISTS {a}.installed (digest CHAR(64) NOT NULL)",
    """CREATE OR REPLACE SQL SECURITY DEFINER VIEW {a}.grants AS
    SELECT d.* FROM mysql.db d JOIN {a}.accounts a ON a.name = d.User WHERE d.Host = '%'""",
    """CREATE OR REPLACE FUNCTION {a}.refusal(p_user {name}) RETURNS VARCHAR(100)
    SQL SECURITY DEFINER READS SQL DATA
    COMMENT 'NULL for an account of this project, absent for none, else why it is not'
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mysql.global_priv WHERE User = p_user) THEN
        RETURN 'absent';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {a}.accounts WHERE name = p_user) THEN
        RETURN 'the account was not made by this project''s access commands';
    END IF;
    IF EXISTS (SELECT 1 FROM mysql.global_priv WHERE User = p_user
               AND (Host <> '%' OR COALESCE(JSON_VALUE(Priv, '$.access'), '0') <> '0')) THEN
        RETURN 'the account has server-wide rights, or another host';
    END IF;
    IF EXISTS (SELECT 1 FROM mysql.db WHERE User = p_user
               AND (Host <> '%' OR Db NOT IN (SELECT pattern FROM {a}.schemas)))
        OR EXISTS (SELECT 1 FROM mysql.tables_priv WHERE User = p_user)
        OR EXISTS (SELECT 1 FROM mysql.columns_priv WHERE User = p_user)
        OR EXISTS (SELECT 1 FROM mysql.procs_priv WHERE User = p_user)
        OR EXISTS (SELECT 1 FROM mysql.proxies_priv WHERE User = p_user)
        OR EXISTS (SELECT 1 FROM mysql.roles_mapping WHERE User = p_user) THEN
        RETURN 'the account has rights outside this project';
    END IF;
    RETURN NULL;
END""",
    """CREATE OR REPLACE PROCEDURE {a}.check_account(p_user {name})
    SQL SECURITY DEFINER READS SQL DATA
BEGIN
    DECLARE reason VARCHAR(200) DEFAULT {a}.refusal(p_user);
    IF reason IS NOT NULL THEN
        SET reason = LEFT(CONCAT('refused for ', p_user, ': ', reason), 128);
        {refused} reason;
    END IF;
END""",
    """CREATE OR REPLACE PROCEDURE {a}.create_account(p_user {name}, p_hash VARCHAR(64))
    SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
    IF NOT {a}.refusal(p_user) <=> 'absent' THEN
        {refused} 'refused: the account exists already';
    END IF;
    EXECUTE IMMEDIATE CONCAT('CREATE USER ', QUOTE(p_user), '@''%'' IDENTIFIED BY PASSWORD ',
                             QUOTE(p_hash));
    INSERT INTO {a}.accounts VALUES (p_user);
END""",
    """CREATE OR REPLACE PROCEDURE {a}.set_password(p_user {name}, p_hash VARCHAR(64))
    SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
    CALL {a}.check_account(p_user);
    EXECUTE IMMEDIATE CONCAT('ALTER USER ', QUOTE(p_user), '@''%'' IDENTIFIED BY PASSWORD ',
                             QUOTE(p_hash));
END""",
    """CREATE OR REPLACE PROCEDURE {a}.grant_privileges(p_user {name}, p_db {db}, p_privileges {set})
    SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
    CALL {a}.check_account(p_user);
    IF p_privileges + 0 = 0 OR NOT EXISTS (
            SELECT 1 FROM {a}.schemas
            WHERE pattern = p_db AND (allowed | p_privileges) = allowed + 0) THEN
        {refused} 'refused: not a database of this project, or not privileges given there';
    END IF;
    EXECUTE IMMEDIATE CONCAT('GRANT ', p_privileges, ' ON `', REPLACE(p_db, '`', '``'), '`.* TO ',
                             QUOTE(p_user), '@''%''');
END""",
    """CREATE OR REPLACE PROCEDURE {a}.revoke_privileges(p_user {name}, p_db {db})
    SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
    DECLARE target TEXT DEFAULT CONCAT(' ON `', REPLACE(p_db, '`', '``'), '`.* FROM ',
                                       QUOTE(p_user), '@''%''');
    CALL {a}.check_account(p_user);
    IF NOT EXISTS (SELECT 1 FROM {a}.schemas WHERE pattern = p_db) THEN
        {refused} 'refused: not a database of this project';
    END IF;
    IF EXISTS (SELECT 1 FROM mysql.db WHERE User = p_user AND Host = '%' AND Db = p_db
               AND Grant_priv = 'Y') THEN
        EXECUTE IMMEDIATE CONCAT('REVOKE GRANT OPTION', target);
    END IF;
    IF EXISTS (SELECT 1 FROM mysql.db WHERE User = p_user AND Host = '%' AND Db = p_db) THEN
        EXECUTE IMMEDIATE CONCAT('REVOKE ALL PRIVILEGES', target);
    END IF;
END""",
    """CREATE OR REPLACE PROCEDURE {a}.drop_account(p_user {name})
    SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
    CALL {a}.check_account(p_user);
    EXECUTE IMMEDIATE CONCAT('DROP USER ', QUOTE(p_user), '@''%''');
    DELETE FROM {a}.accounts WHERE name = p_user;
END""",
)


def mysql_installer(connection: dj.Connection) -> str | None:
    """None if the connected account may install the access procedures, else what it lacks."""
    held = {
        privilege
        for privilege, grantable in _rows(
            connection,
            "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES "
            "WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', "
            "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')",
        )
        if grantable == "YES"
    }
    missing = [right for right in INSTALLER_RIGHTS if right not in held]
    return f"{', '.join(missing)} ON *.* WITH GRANT OPTION" if missing else None


def mysql_check_register(connection: dj.Connection, name: str) -> None:
    """Refuse to install where an account other than an admin may write the register.

    Whoever could change the list of the project's accounts and databases (a wildcard grant
    such as ``lab\\_%``.* covers ``lab_..._access``) would steer the procedures, which run
    with the server administrator's rights.
    """
    others = ("Select_priv", "Execute_priv", "User", "Host", "Db")
    query = "SELECT * FROM mysql.db WHERE %s LIKE Db"
    for row in connection.query(query, args=(name,), as_dict=True):
        writes = any(value == "Y" for column, value in row.items() if column not in others)
        if row["Db"] != mysql_pattern(name) or writes:
            raise ValueError(
                f"{row['User']}@{row['Host']} holds privileges on {name} (through {row['Db']}): "
                "it could rewrite the register of the access procedures; narrow that grant "
                "or choose another prefix"
            )
    query = "SELECT User, Host FROM mysql.tables_priv WHERE Db = %s"
    for user, host in _rows(connection, query, name):
        raise ValueError(f"{user}@{host} holds privileges on tables of {name}: revoke them first")


def mysql_install(
    connection: dj.Connection, prefix: str, desired: dict[str, Grant]
) -> list[Statement]:
    """Statements that (re)install the access procedures of `prefix`, if they changed."""
    escape = _cursor(connection).connection.escape
    name = access_schema(prefix)
    mysql_check_register(connection, name)
    quoted = "`" + name.replace("`", "``") + "`"
    everything = ",".join(MYSQL_PRIVILEGES.values())
    allowed = {pattern: everything for pattern in desired}
    allowed[mysql_pattern(name)] = ",".join(sorted(ADMIN_ACCESS))
    allowed[mysql_pattern(development_prefix(prefix)) + "%"] = ""  # to revoke only
    rows = ", ".join(f"({escape(p)}, {escape(a)})" for p, a in sorted(allowed.items()))
    statements = [f"CREATE DATABASE IF NOT EXISTS {quoted}"]
    for routine in MYSQL_ROUTINES:
        for key, value in (
            ("{a}", quoted),
            ("{name}", MYSQL_NAME),
            ("{db}", MYSQL_DB),
            ("{set}", MYSQL_SET),
            ("{refused}", MYSQL_REFUSED),
        ):
            routine = routine.replace(key, value)
        statements.append(routine)
    statements += [f"DELETE FROM {quoted}.schemas", f"INSERT INTO {quoted}.schemas VALUES {rows}"]
    digest = _digest(statements)
    query = "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    if _rows(connection, query, name, "installed") and _rows(
        connection, f"SELECT 1 FROM {quoted.replace('%', '%%')}.installed WHERE digest = %s", digest
    ):
        return []
    statements += [
        f"DELETE FROM {quoted}.installed",
        f"INSERT INTO {quoted}.installed VALUES ('{digest}')",
    ]
    return [Statement(s) for s in statements]


def mysql_plan(
    connection: dj.Connection, user: str, role: str | None, policy: dict[str, Any], prefix: str
) -> Plan:
    """Statements that give `user` exactly `role` on this project's schemas (None: nothing).

    Run by a server administrator, they (re)install the access procedures and grant
    directly; run by an admin, they call the procedures. The current grants are read and
    only what differs is changed; each change carries its undo, so that `apply` can
    restore the previous state on a failure.
    """
    escape = _cursor(connection).connection.escape
    account = escape(user) + "@'%'"
    (version,) = _rows(connection, "SELECT VERSION()")[0]
    backend = "mariadb" if "mariadb" in version.lower() else "mysql"
    identified = "IDENTIFIED BY PASSWORD" if backend == "mariadb" else "IDENTIFIED BY"
    name = access_schema(prefix)
    quoted = "`" + name.replace("`", "``") + "`"
    escaped = quoted.replace("%", "%%")  # in queries with parameters
    desired = mysql_desired(role, policy, prefix)
    legacy = mysql_pattern(development_prefix(prefix)) + "%"  # the former shared wildcard
    desired.setdefault(legacy, NO_GRANT)
    statements: list[Statement] = []
    lacking = mysql_installer(connection)
    if lacking is None:
        statements += mysql_install(connection, prefix, desired)
        query = "SELECT 1 FROM mysql.global_priv WHERE User = %s AND Host = '%%'"
        exists = bool(_rows(connection, query, user))
        query = (
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
        )
        registered = bool(_rows(connection, query, name, "accounts")) and bool(
            _rows(connection, f"SELECT 1 FROM {escaped}.accounts WHERE name = %s", user)
        )
        grants_table = "mysql.db"
    else:
        needs = f"EXECUTE on {quoted} (the admin role), or {lacking} to install it"
        refusal = _refusal(connection, f"{quoted}.refusal", user, needs)
        if refusal not in (None, "absent"):
            raise ValueError(f"refusing to change {user!r}: {refusal}; a server administrator may")
        exists, registered, grants_table = refusal is None, True, f"{escaped}.grants"
    current: dict[str, Grant] = {}
    query = f"SELECT * FROM {grants_table} WHERE User = %s AND Host = '%%'"
    for row in connection.query(query, args=(user,), as_dict=True):
        granted = frozenset(p for column, p in MYSQL_PRIVILEGES.items() if row[column] == "Y")
        current[row["Db"]] = (granted, row["Grant_priv"] == "Y")

    literal = escape(user)
    if lacking is None:  # a server administrator: direct statements

        def grant(grant_: Grant, pattern: str) -> list[str]:
            return mysql_grant_sql(grant_, pattern, account)

        def revoke(grant_: Grant, pattern: str) -> list[str]:
            return mysql_revoke_sql(grant_, pattern, account)

        create = Statement(f"CREATE USER {account} {identified}", secret=True)
        drop = f"DROP USER {account}"
        password = Statement(f"ALTER USER {account} {identified}", secret=True)
    else:  # an admin: the access procedures

        def grant(grant_: Grant, pattern: str) -> list[str]:
            listed = ",".join(p for p in MYSQL_PRIVILEGES.values() if p in grant_[0])
            call = f"CALL {quoted}.grant_privileges({literal}, {escape(pattern)}, {escape(listed)})"
            return [call] * bool(listed)

        def revoke(grant_: Grant, pattern: str) -> list[str]:
            call = f"CALL {quoted}.revoke_privileges({literal}, {escape(pattern)})"
            return [call] * (grant_ != NO_GRANT)

        create = Statement(f"CALL {quoted}.create_account({literal},", secret=True, close=")")
        drop = f"CALL {quoted}.drop_account({literal})"
        password = Statement(f"CALL {quoted}.set_password({literal},", secret=True, close=")")

    if role is not None and not exists:
        statements.append(Statement(create.sql, True, (drop,), close=create.close))
    if role is not None and not registered:  # made by hand, or before the register existed
        forget = f"DELETE FROM {quoted}.accounts WHERE name = {literal}"
        register = f"INSERT INTO {quoted}.accounts VALUES ({literal})"
        statements.append(Statement(register, undo=(forget,)))
    for pattern, new in desired.items():
        old = current.get(pattern, NO_GRANT)
        if old == new:
            continue
        forward = revoke(old, pattern) + grant(new, pattern)
        undo = revoke(new, pattern) + grant(old, pattern)
        statements.append(Statement(forward[0], undo=tuple(undo)))
        statements += [Statement(sql) for sql in forward[1:]]
    # Former versions gave admins CREATE USER server-wide: enough to take over the server.
    if lacking is None and exists and any(grant_[1] for grant_ in current.values()):
        statements += [Statement(sql.format(account), optional=True) for sql in FORMER_ADMIN_TOOLS]
    if role is not None and exists:  # last: nothing after it can fail
        statements.append(password)
    return Plan(user, backend, statements)


# ---------------------------------------------------------------------------- PostgreSQL
def group_role(role: str, prefix: str) -> str:
    """The PostgreSQL role that carries an access role for one schema set."""
    return f"{prefix}{role}"


# The access functions: SECURITY DEFINER, owned by the superuser that installed them, with a
# fixed search_path. They refuse every role that is not one of the project's (made by
# `access grant`, by OID, with no server-wide attribute, membership or object outside the
# project) and every role to grant that is not one of the project's access roles.
POSTGRES_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
POSTGRES_REFUSED = "USING ERRCODE = 'insufficient_privilege'"
POSTGRES_ROUTINES = (
    "CREATE TABLE IF NOT EXISTS {a}.accounts (role oid PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS {a}.schemas (nspname name PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS {a}.groups (rolname name PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS {a}.defaults (grp name NOT NULL, template text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {a}.installed (digest text NOT NULL)",
    """CREATE OR REPLACE FUNCTION {a}.refusal(p_user text) RETURNS text
LANGUAGE plpgsql STABLE {definer} AS $body$
DECLARE
    r record;
BEGIN
    SELECT oid, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls AS wide
        INTO r FROM pg_roles WHERE rolname = p_user;
    IF NOT FOUND THEN
        RETURN 'absent';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {a}.accounts WHERE role = r.oid) THEN
        RETURN 'it was not made by this project''s access commands';
    END IF;
    IF r.wide THEN
        RETURN 'it has server-wide rights';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
               WHERE m.member = r.oid AND g.rolname NOT IN (SELECT rolname FROM {a}.groups)) THEN
        RETURN 'it is a member of roles outside this project';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_shdepend d
               WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid
               AND NOT COALESCE(
                   d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND (d.classid = 'pg_default_acl'::regclass
                        OR (SELECT nspname FROM pg_namespace WHERE oid = CASE d.classid
                              WHEN 'pg_namespace'::regclass THEN d.objid
                              WHEN 'pg_class'::regclass
                                  THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid)
                              WHEN 'pg_type'::regclass
                                  THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid)
                           END) IN (SELECT nspname FROM {a}.schemas)),
                   false)) THEN
        RETURN 'it owns or holds rights on objects outside this project';
    END IF;
    RETURN NULL;
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.check_account(p_user text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
DECLARE
    reason text := {a}.refusal(p_user);
BEGIN
    IF reason IS NOT NULL THEN
        RAISE EXCEPTION 'refused for %: %', p_user, reason {refused};
    END IF;
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.check_group(p_group text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
BEGIN
    IF p_group NOT IN (SELECT rolname FROM {a}.groups) THEN
        RAISE EXCEPTION 'refused: % is not an access role of this project', p_group {refused};
    END IF;
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.create_login(p_user text, p_secret text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
BEGIN
    IF {a}.refusal(p_user) IS DISTINCT FROM 'absent' THEN
        RAISE EXCEPTION 'refused for %: the role exists already', p_user {refused};
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', p_user, p_secret);
    INSERT INTO {a}.accounts SELECT oid FROM pg_roles WHERE rolname = p_user;
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.set_password(p_user text, p_secret text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
BEGIN
    PERFORM {a}.check_account(p_user);
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', p_user, p_secret);
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.grant_access(p_user text, p_group text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
BEGIN
    PERFORM {a}.check_account(p_user);
    PERFORM {a}.check_group(p_group);
    EXECUTE format('GRANT %I TO %I', p_group, p_user);
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.revoke_access(p_user text, p_group text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
BEGIN
    PERFORM {a}.check_account(p_user);
    PERFORM {a}.check_group(p_group);
    EXECUTE format('REVOKE %I FROM %I', p_group, p_user);
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.share_defaults(p_user text, p_group text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
DECLARE
    t text;
BEGIN
    PERFORM {a}.check_account(p_user);
    PERFORM {a}.check_group(p_group);
    FOR t IN SELECT template FROM {a}.defaults WHERE grp = p_group LOOP
        EXECUTE format(t, p_user);
    END LOOP;
END
$body$""",
    """CREATE OR REPLACE FUNCTION {a}.drop_login(p_user text) RETURNS void
LANGUAGE plpgsql {definer} AS $body$
BEGIN
    PERFORM {a}.check_account(p_user);
    DELETE FROM {a}.accounts WHERE role = (SELECT oid FROM pg_roles WHERE rolname = p_user);
    EXECUTE format('DROP ROLE %I', p_user);
END
$body$""",
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {a} FROM PUBLIC",
)


def postgres_plan(
    connection: dj.Connection, user: str, role: str | None, policy: dict[str, Any], prefix: str
) -> Plan:
    """Statements, run in one transaction, that give `user` exactly `role` (None: nothing).

    Run by a superuser, they also (re)create every access role of this schema set with
    exactly the privileges of access.toml, default privileges included, and install the
    access functions. Run by the project's admin, they call those functions.
    """
    from psycopg2 import sql

    cursor = _cursor(connection)

    def render(template: str, *identifiers: str) -> str:
        return sql.SQL(template).format(*map(sql.Identifier, identifiers)).as_string(cursor)

    def template(text: str, *identifiers: str) -> str:
        """A statement for format() in the access functions: %I stands for the user."""
        quoted = [render("{}", name).replace("%", "%%") for name in identifiers]
        return sql.SQL(text).format(sql.SQL("%I"), *map(sql.SQL, quoted)).as_string(cursor)

    def literal(value: str) -> str:
        return sql.Literal(value).as_string(cursor)

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
    a = render("{}", access_schema(prefix))
    refusal = None
    if not superuser:
        refusal = _refusal(
            connection,
            f"{a}.refusal",
            user,
            f"EXECUTE on the functions of schema {a} (the admin role), or a superuser",
        )
        if refusal not in (None, "absent"):
            raise ValueError(f"refusing to change {user!r}: {refusal}; a superuser may")
    existing = {
        name
        for (name,) in _rows(
            connection,
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
            list(groups.values()),
        )
    }

    def memberships(member: str) -> set[str]:
        return {
            name
            for (name,) in _rows(
                connection,
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                member,
            )
        }

    member_of = memberships(user)
    schemas = {name: prefix + name for name in pipeline.graph} | {"": prefix + "_versions"}
    present = {
        name
        for (name,) in _rows(
            connection,
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
            list(schemas.values()),
        )
    }
    admin_groups = {g for n, g in groups.items() if policy["roles"][n].get("manage")}
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
    # Default privileges on what a user of each role declares later, as format() templates.
    defaults: dict[str, list[str]] = {}
    for name, spec in policy["roles"].items():
        role_defaults = defaults.setdefault(groups[name], [])
        if spec.get("manage"):  # what an admin declares is readable by the roles that read it
            for other, group in groups.items():
                for schema, tables in table_grants[other].items():
                    role_defaults.append(
                        template(
                            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT "
                            + tables
                            + " ON TABLES TO {}",
                            schema,
                            group,
                        )
                    )
        if spec.get("develop"):  # a shared development set: what one developer declares, all use
            for other, group in groups.items():
                if policy["roles"][other].get("develop") or policy["roles"][other].get("manage"):
                    role_defaults += [
                        template(
                            "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT USAGE, CREATE ON SCHEMAS TO {}",
                            group,
                        ),
                        template(
                            "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT ALL ON TABLES TO {}", group
                        ),
                    ]
    statements: list[str] = []
    if superuser and role is not None:
        missing = sorted(set(schemas.values()) - present)
        if missing:
            raise ValueError(
                f"schemas {', '.join(missing)} do not exist: run `declare` for prefix {prefix!r} first"
            )
        owner = _rows(
            connection,
            "SELECT r.rolname, r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
            "WHERE n.nspname = %s",
            access_schema(prefix),
        )
        if owner and not owner[0][1]:
            raise ValueError(
                f"schema {a} belongs to {owner[0][0]!r}, not to a superuser: "
                "its functions would not be trusted; drop it first"
            )
        database = database_name()
        statements += [
            render("CREATE ROLE {} NOLOGIN", group)
            for group in groups.values()
            if group not in existing
        ]
        for name, group in groups.items():
            spec = policy["roles"][name]
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
                    render("GRANT " + usage + " ON SCHEMA {} TO {}", schema, group),
                    render("GRANT " + tables + " ON ALL TABLES IN SCHEMA {} TO {}", schema, group),
                    render(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT "
                        + tables
                        + " ON TABLES TO {}",
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
        # Former versions made admins members of the other access roles, WITH ADMIN OPTION.
        for group in admin_groups & existing:
            statements += [
                render("REVOKE {} FROM {}", other, group)
                for other in memberships(group) & set(groups.values())
            ]
        install = [render("CREATE SCHEMA IF NOT EXISTS {}", access_schema(prefix))]
        install += [routine.replace("{a}", a) for routine in POSTGRES_ROUTINES]
        install = [
            s.replace("{definer}", POSTGRES_DEFINER).replace("{refused}", POSTGRES_REFUSED)
            for s in install
        ]
        rows: dict[str, list[tuple[str, ...]]] = {
            "schemas": [(n,) for p in (prefix, development_prefix(prefix)) for n in schemas_of(p)],
            "groups": [(g,) for g in groups.values()],
            "defaults": [(g, t) for g, ts in defaults.items() for t in ts],
        }
        for table, values in rows.items():
            install.append(f"DELETE FROM {a}.{table}")
            if values:
                listed = ", ".join("(" + ", ".join(map(literal, row)) + ")" for row in values)
                install.append(f"INSERT INTO {a}.{table} VALUES {listed}")
        digest = _digest(install)
        installed = _rows(connection, "SELECT to_regclass(%s)", f"{a}.installed")[0][0]
        if not installed or not _rows(
            connection, f"SELECT 1 FROM {a}.installed WHERE digest = %s", digest
        ):
            statements += [*install, f"DELETE FROM {a}.installed"]
            statements.append(f"INSERT INTO {a}.installed VALUES ({literal(digest)})")
        statements.append(render("REVOKE ALL ON SCHEMA {} FROM PUBLIC", access_schema(prefix)))
        for group in admin_groups:
            statements += [
                render("GRANT USAGE ON SCHEMA {} TO {}", access_schema(prefix), group),
                render(
                    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}",
                    access_schema(prefix),
                    group,
                ),
            ]
    elif role is not None and set(groups.values()) - existing:
        raise ValueError(
            f"the access roles of prefix {prefix!r} do not exist yet: a superuser runs "
            "`access grant` once to create them"
        )
    plan = Plan(user, "postgresql", [Statement(s) for s in statements])
    others = [g for name, g in groups.items() if g in member_of and name != role]
    if not superuser:  # an admin: the access functions
        plan.statements += [
            Statement(f"SELECT {a}.revoke_access({literal(user)}, {literal(g)})") for g in others
        ]
        if role is not None:
            verb = "create_login" if refusal == "absent" else "set_password"
            call = f"SELECT {a}.{verb}({literal(user)},"
            plan.statements.append(Statement(call, secret=True, close=")"))
            if groups[role] not in member_of:
                grant = f"SELECT {a}.grant_access({literal(user)}, {literal(groups[role])})"
                plan.statements.append(Statement(grant))
            if defaults[groups[role]]:
                share = f"SELECT {a}.share_defaults({literal(user)}, {literal(groups[role])})"
                plan.statements.append(Statement(share))
        return plan
    # Former versions gave admins CREATEROLE: in PostgreSQL 15, a way to take over the server.
    if found and found[0][1] and admin_groups & member_of:
        plan.statements.append(Statement(render("ALTER ROLE {} NOCREATEROLE", user)))
    plan.statements += [Statement(render("REVOKE {} FROM {}", g, user)) for g in others]
    if role is None:
        return plan
    verb = "ALTER" if found else "CREATE"
    plan.statements.append(
        Statement(render(verb + " ROLE {} WITH LOGIN PASSWORD", user), secret=True)
    )
    plan.statements.append(
        Statement(
            f"INSERT INTO {a}.accounts SELECT oid FROM pg_catalog.pg_roles "
            f"WHERE rolname = {literal(user)} ON CONFLICT DO NOTHING"
        )
    )
    if groups[role] not in member_of:
        plan.statements.append(Statement(render("GRANT {} TO {}", groups[role], user)))
    quoted_user = render("{}", user)
    plan.statements += [
        Statement(re.sub("%([%I])", lambda m: "%" if m[1] == "%" else quoted_user, t))
        for t in defaults[groups[role]]
    ]
    return plan


def schemas_of(prefix: str) -> list[str]:
    """The schema names of one schema set, `<prefix>_versions` included."""
    return [prefix + name for name in (*pipeline.graph, "_versions")]


# ---------------------------------------------------------------------------- entry points
def missing_admin_right(connection: dj.Connection | None = None) -> str | None:
    """None if the connected account may set up access (install the routines), else what it lacks."""
    connection = connection or dj.conn()
    if connection.adapter.backend == "postgresql":
        (superuser,) = _rows(
            connection, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )[0]
        return None if superuser else "SUPERUSER"
    return mysql_installer(connection)


def plan_access(user: str, role: str | None, prefix: str | None = None) -> Plan:
    """What `access grant` (a role) or `access revoke` (None) does, read from the server."""
    check_user(user)
    policy = load_policy()
    if role is not None and role not in policy["roles"]:
        raise ValueError(f"unknown role {role!r}; access.toml defines {', '.join(policy['roles'])}")
    prefix = pipeline.schema_prefix() if prefix is None else prefix
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
            sql, close = statement.sql.replace("%", "%%"), statement.close.replace("%", "%%")
            connection.query(f"{sql} %s{close}", args=(secret,))
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
    prefix = pipeline.schema_prefix() if prefix is None else prefix
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
