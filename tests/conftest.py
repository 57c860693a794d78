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
