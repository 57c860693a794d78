"""Registers the shared fixtures (tests/fixtures.py): real servers, savers, S3, blob stores."""

import os
import warnings

import pytest

pytest_plugins = ["tests.fixtures"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test run leaves no key behind on shared servers: the keys of this run's prefixes that
    remain at the end are swept (tests/fixtures.py) and reported here, prefix by prefix, so the
    test that leaked can be found (its prefix is in its saver's key_prefix). With
    LTS_STRICT_CLEANUP=1 a leak fails the run."""
    from tests.fixtures import leftovers
    from tests.helpers import PREFIX_OWNERS

    if not leftovers:
        return
    total = sum(leftovers.values())
    shown = ", ".join(f"{prefix} ({n}, {PREFIX_OWNERS.get(prefix, 'a subprocess or another module')})"
                      for prefix, n in sorted(leftovers.items())[:20])  # fmt: skip
    message = f"tests left {total} Redis keys behind under {len(leftovers)} prefixes (swept now): {shown}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"WARNING: {message}", yellow=True, bold=True)
    warnings.warn(message, stacklevel=1)
    if os.environ.get("LTS_STRICT_CLEANUP") == "1":
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# `make test-fast` (pytest -m fast): the tests that need no server. A test is fast when none of
# these fixtures is in its closure, and it is not one of those that reach or start servers some
# other way (below); `make test-fast` points REDIS_URL and DATABASE_URL at a closed port, so a
# test wrongly counted as fast fails there instead of using a server quietly.
SERVER_FIXTURES = frozenset({
    "server_urls", "redis_url", "postgres_url", "test_database_url", "key_prefix", "make_private_redis",
    "make_private_postgres", "private_redis", "private_postgres", "saver_context", "saver", "durable_saver",
    "moto_endpoint", "s3_client", "s3_bucket", "pg_blob_schema", "redis_cluster", "cluster_saver_context",
})  # fmt: skip
SERVER_MODULES = ("test_cluster.py", "test_servers.py", "test_netem.py", "test_redis_stack.py")  # private servers
SERVER_TESTS = (  # reach a server through request.getfixturevalue or a parametrized store
    "test_blob_stores.py::*[[]postgres*", "test_blob_stores.py::*[[]s3*",  # fnmatch: [[] is a literal [
    "test_flusher_supervision.py::test_every_string_survives_jsonb",
    "test_filters.py::test_the_sql_and_the_python_matcher_agree",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: needs no server (set by conftest.py; `make test-fast`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import fnmatch

    for item in items:
        name = f"{item.path.name}::{item.nodeid.partition('::')[2]}"
        if SERVER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())) and not (
            name.startswith(SERVER_MODULES) or any(fnmatch.fnmatchcase(name, p) for p in SERVER_TESTS)
        ):
            item.add_marker(pytest.mark.fast)
