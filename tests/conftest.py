"""Registers the shared fixtures (tests/fixtures.py): real servers, savers, S3, blob stores."""

pytest_plugins = ["tests.fixtures"]
