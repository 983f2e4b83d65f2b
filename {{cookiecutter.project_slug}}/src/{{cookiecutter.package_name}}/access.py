"""Team access control: the roles of access.toml as database grants and bucket policies.

Each role in access.toml reads, writes, develops or manages kinds of schemas; a schema's
kind is its role in the pipeline (SCHEMA_ROLES, overridable in access.toml). From that:

- read    -> SELECT;
- write   -> SELECT, INSERT, UPDATE, DELETE, plus SELECT on every upstream schema (foreign
             keys are checked there) and DELETE on every downstream schema (deletes cascade);
             the schemas' jobs tables live inside them, so writers can populate;
- develop -> every privilege on the development schemas (``dev_<prefix>``), CREATE included;
- manage  -> every privilege on the production schemas, with GRANT.

MySQL and MariaDB get grants per user; PostgreSQL gets one native role per access role,
granted to users. Passwords are bound as query parameters, never printed or logged.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class Statement:
    """One SQL statement; `password` says whether it takes the password as parameter."""

    sql: str
    password: bool = False

    def shown(self) -> str:
        return self.sql.replace("%s", "'<password>'") if self.password else self.sql


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


def quote_mysql(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mysql_grants(user: str, role: str, policy: dict[str, Any], prefix: str) -> list[Statement]:
    """Statements that create `user` and give it `role`, on MySQL or MariaDB."""
    account = f"'{user}'@'%'"
    statements = [Statement(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY %s", password=True)]
    spec = policy["roles"][role]
    versions = f"{prefix}_versions"
    for name, granted in privileges(role, policy).items():
        grant = "ALL PRIVILEGES" if "ALL" in granted else ", ".join(sorted(granted))
        option = " WITH GRANT OPTION" if spec.get("manage") else ""
        statements.append(
            Statement(f"GRANT {grant} ON {quote_mysql(prefix + name)}.* TO {account}{option}")
        )
    if spec.get("manage"):
        statements.append(
            Statement(f"GRANT ALL PRIVILEGES ON {quote_mysql(versions)}.* TO {account}")
        )
    else:
        statements.append(Statement(f"GRANT SELECT ON {quote_mysql(versions)}.* TO {account}"))
    if spec.get("develop"):
        pattern = development_prefix(prefix).replace("_", r"\_") + "%"
        statements.append(
            Statement(f"GRANT ALL PRIVILEGES ON {quote_mysql(pattern)}.* TO {account}")
        )
    return statements


def quote_pg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def group_role(role: str, prefix: str) -> str:
    """The PostgreSQL role that carries an access role for one schema set."""
    return f"{prefix}{role}"


def postgres_role_grants(role: str, policy: dict[str, Any], prefix: str) -> list[Statement]:
    """Statements that create the native role of `role` and its grants, on PostgreSQL."""
    group = quote_pg(group_role(role, prefix))
    spec = policy["roles"][role]
    statements = [
        Statement(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"'{group_role(role, prefix)}') THEN CREATE ROLE {group} NOLOGIN; END IF; END $$"
        )
    ]
    grants = privileges(role, policy)
    grants[""] = {"ALL"} if spec.get("manage") else {"SELECT"}  # the versions schema
    for name, granted in grants.items():
        schema = quote_pg(f"{prefix}_versions" if name == "" else prefix + name)
        option = " WITH GRANT OPTION" if spec.get("manage") else ""
        # PostgreSQL shows keys and constraints only to roles with more than SELECT on a
        # table; REFERENCES lets readers see primary keys, which joins and populate need.
        tables = (
            "ALL PRIVILEGES" if "ALL" in granted else ", ".join(sorted(granted | {"REFERENCES"}))
        )
        usage = "ALL" if "ALL" in granted else "USAGE"
        statements += [
            Statement(f"GRANT {usage} ON SCHEMA {schema} TO {group}{option}"),
            Statement(f"GRANT {tables} ON ALL TABLES IN SCHEMA {schema} TO {group}{option}"),
            Statement(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {tables} ON TABLES TO {group}"
            ),
        ]
    if spec.get("develop") or spec.get("manage"):
        statements.append(
            Statement(f"GRANT CREATE ON DATABASE {quote_pg(database_name())} TO {group}")
        )
    return statements


def postgres_user_grants(
    user: str, role: str, policy: dict[str, Any], prefix: str
) -> list[Statement]:
    """Statements that create `user` (a login role) and make it a member of `role`."""
    login = quote_pg(user)
    return [
        *postgres_role_grants(role, policy, prefix),
        Statement(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') "
            f"THEN CREATE ROLE {login} LOGIN PASSWORD %s; END IF; END $$",
            password=True,
        ),
        Statement(f"GRANT {quote_pg(group_role(role, prefix))} TO {login}"),
    ]


def revoke_statements(user: str, role: str | None, prefix: str) -> list[Statement]:
    """Statements that take away a user's access (the account itself stays)."""
    if dj.config.database.backend == "postgresql":
        roles = [role] if role else list(load_policy()["roles"])
        return [
            Statement(f"REVOKE {quote_pg(group_role(name, prefix))} FROM {quote_pg(user)}")
            for name in roles
        ]
    return [Statement(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{user}'@'%'")]


def development_prefix(prefix: str) -> str:
    return prefix if prefix.startswith("dev_") else f"dev_{prefix}"


def database_name() -> str:
    return dj.config.database.name or "postgres"


def grant_statements(user: str, role: str, prefix: str | None = None) -> list[Statement]:
    """Statements that give `user` the access of `role`, for the configured backend."""
    policy = load_policy()
    if role not in policy["roles"]:
        raise ValueError(f"unknown role {role!r}; access.toml defines {', '.join(policy['roles'])}")
    prefix = schema_prefix() if prefix is None else prefix
    if dj.config.database.backend == "postgresql":
        return postgres_user_grants(user, role, policy, prefix)
    return mysql_grants(user, role, policy, prefix)


def apply(statements: list[Statement], password: str | None) -> None:
    """Run statements with the configured (administrator) connection."""
    connection = dj.conn()
    for statement in statements:
        # The drivers %-format every query: keep wildcards such as '%' hosts literal.
        sql = statement.sql.replace("%", "%%")
        if statement.password:
            connection.query(sql.replace("%%s", "%s"), args=(password,))
        else:
            connection.query(sql)


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
