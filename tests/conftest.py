"""Shared fixtures: real PostgreSQL clusters (tests/fixtures/pg.py) and a real S3 endpoint (tests/fixtures/s3.py)."""

pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.s3"]
