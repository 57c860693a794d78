"""Behind a real PgBouncer in transaction pooling mode: no server-side prepared
statements, row-level security set per transaction, so 120 threads all reach Postgres and
tenants stay apart. Skipped only where the `pgbouncer` binary cannot be found."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg_pool import ConnectionPool

from devtools.pgbouncer import PrivatePgBouncer, find_pgbouncer
from langgraph_tiered_saver import tenant_scope
from langgraph_tiered_saver._sansio.io import SyncDriver
from langgraph_tiered_saver.durable.migrations import setup_op
from langgraph_tiered_saver.durable.roles import create_app_role_op
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import two_step_graph
from tests.helpers import new_prefix

pytestmark = pytest.mark.skipif(
    find_pgbouncer() is None, reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
)
THREADS = 120
PREPARE: dict[str, Any] = {}  # the default: no server-side prepared statements




@pytest.fixture
def app_role(test_database_url: str) -> Iterator[tuple[str, str]]:
    """A schema set up by the admin, and a NOSUPERUSER NOBYPASSRLS login role for it."""
    schema, role = f"lts_{uuid.uuid4().hex[:8]}", f"lts_bouncer_{uuid.uuid4().hex[:8]}"
    with ConnectionPool(test_database_url, kwargs={"autocommit": True}, open=True) as pool:
        SyncDriver(None, pool).run(setup_op(schema))  # the tables only: the saver's setup claims the hot tier
        SyncDriver(None, pool).run(create_app_role_op(schema, role, login=True))
    yield schema, role
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_120_threads_reach_postgres_through_pgbouncer(
    app_role: tuple[str, str], test_database_url: str, redis_url: str, saver_context: Callable[..., Any]
) -> None:
    schema, role = app_role
    info = psycopg.conninfo.conninfo_to_dict(test_database_url)
    with PrivatePgBouncer(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)), [role], pool_size=3) as bouncer:
        url = bouncer.url(role, str(info["dbname"]))
        prefix = new_prefix()
        with saver_context(durable=True, postgres_url=url, schema=schema, key_prefix=prefix, tenant_id=None, **PREPARE) as saver:
            graph = two_step_graph(saver)
            threads = [f"t{i:03d}" for i in range(THREADS)]
            for i, thread in enumerate(threads):  # two tenants, many short transactions
                graph.invoke({"log": []}, {"configurable": {"thread_id": thread, "tenant_id": f"tenant-{i % 2}"}})
            results = saver.flush()
            assert all(r.remaining == 0 for r in results)  # the rest the background flusher took

            with psycopg.connect(test_database_url) as conn:
                per_tenant = dict(conn.execute(
                    f'SELECT tenant_id, count(DISTINCT thread_id) FROM "{schema}".checkpoints GROUP BY 1'
                ).fetchall())  # fmt: skip
            assert per_tenant == {"tenant-0": THREADS // 2, "tenant-1": THREADS // 2}
            print(f"PgBouncer transaction mode: {THREADS} of {THREADS} threads flushed")

            client = redis.Redis.from_url(redis_url)  # Redis forgets them: reads go through PgBouncer
            for i in (0, 1):
                client.delete(*K.thread_keys(prefix, f"tenant-{i}", threads[i]))
            client.close()
            with tenant_scope("tenant-0"):
                assert saver.get_tuple({"configurable": {"thread_id": threads[0]}}) is not None
                assert saver.get_tuple({"configurable": {"thread_id": threads[1]}}) is None  # tenant-1's: RLS
            with tenant_scope("tenant-1"):
                assert saver.get_tuple({"configurable": {"thread_id": threads[1]}}).checkpoint["channel_values"]["log"] == ["a", "b"]
