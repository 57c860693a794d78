"""The application role: what the saver should connect as, and a check of what it connects as.

Row-level security binds every role except superusers and roles with BYPASSRLS (FORCE makes it
bind the table owner too), so the saver's role must be neither. `create_app_role_op` makes such a
role with only the privileges the saver uses; `check_role_op` lets the saver warn when it runs as
a role that would silently see every tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.errors import ConfigError

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Names and password travel as transaction-local settings and are quoted by format(%I, %L)
# server-side: CREATE ROLE / GRANT take no bind parameters. The role may use the tables and read
# schema_migrations (so that its setup() call is a read-only version check), use the schema's
# sequences and execute its functions, nothing else.
CREATE_APP_ROLE = """
DO $lts_role$
DECLARE
    r text := current_setting('lts.role_name');
    s text := current_setting('lts.role_schema');
    login boolean := current_setting('lts.role_login')::boolean;
    pw text := nullif(current_setting('lts.role_password'), '');
    obj text;
    privileges text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I', r);
    END IF;
    EXECUTE format(
        'ALTER ROLE %I NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION %s',
        r, CASE WHEN login THEN 'LOGIN' ELSE 'NOLOGIN' END);
    IF pw IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', r, pw);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, r);
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON %I.checkpoints, %I.checkpoint_blobs, '
        '%I.checkpoint_writes, %I.blob_chunks TO %I', s, s, s, s, r);
    EXECUTE format('GRANT SELECT ON %I.schema_migrations TO %I', s, r);
    -- tables and sequences of later migrations, each when the schema has it
    FOR obj, privileges IN SELECT * FROM (VALUES
        ('flush_fence', 'SELECT, INSERT, UPDATE, DELETE ON'),
        ('written_through', 'SELECT, INSERT, DELETE ON'),
        ('write_through_count', 'USAGE, SELECT ON SEQUENCE'),
        ('hot_tier', 'SELECT, INSERT, UPDATE ON')
    ) AS later(obj, privileges) LOOP
        IF to_regclass(format('%I.%I', s, obj)) IS NOT NULL THEN
            EXECUTE format('GRANT %s %I.%I TO %I', privileges, s, obj, r);
        END IF;
    END LOOP;
    -- the saver's functions (flush fence, hot-tier check, reads); each runs as its caller
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO %I', s, r);
END
$lts_role$
"""

CHECK_ROLE = """
SELECT current_user::text, r.rolsuper, r.rolbypassrls
FROM pg_roles r WHERE r.rolname = current_user
"""


@dataclass(frozen=True, slots=True)
class RoleCheck:
    name: str
    superuser: bool
    bypass_rls: bool

    @property
    def bypasses_rls(self) -> bool:
        return self.superuser or self.bypass_rls

    def warning(self) -> str | None:
        """A log line for the saver when tenant isolation is not enforced by Postgres, else None."""
        if not self.bypasses_rls:
            return None
        why = "a superuser" if self.superuser else "a role with BYPASSRLS"
        return (
            f"Postgres role {self.name!r} is {why}: row-level security does not apply, so tenant "
            "isolation rests on WHERE clauses only. Connect as an application role "
            "(langgraph_tiered_saver.durable.roles.create_app_role_op)."
        )


def create_app_role_op(
    schema: str, role: str, *, login: bool = False, password: str | None = None
) -> Op[None]:
    """Create (or bring back in line) a NOSUPERUSER NOBYPASSRLS role with the saver's grants.

    Run it as an administrator after `setup_op`. `password` implies nothing about `login`: a
    NOLOGIN role is meant to be granted to the login roles of the application.
    """
    if not ROLE_NAME.fullmatch(role):
        raise ConfigError(f"role name {role!r} is not allowed: use [a-z_][a-z0-9_]{{0,62}}")
    settings = (
        ("lts.role_name", role),
        ("lts.role_schema", sql.check_schema(schema)),
        ("lts.role_login", "on" if login else "off"),
        ("lts.role_password", password or ""),
    )
    yield PgCall((PgStatement(CREATE_APP_ROLE),), settings=settings)


def check_role_op() -> Op[RoleCheck]:
    """What the pool's connections run as, for the saver's startup warning."""
    (rows,) = yield PgCall((PgStatement(CHECK_ROLE, fetch=True),))
    role, superuser, bypass = rows[0]
    return RoleCheck(str(role), bool(superuser), bool(bypass))
