"""The PostgreSQL the tests use: a fresh schema per test in the database ``UNDERWAY_TEST_POSTGRES``
names (default: the machine's ``test`` database on 127.0.0.1:5432).

Without a reachable PostgreSQL these tests skip with the reason, except under ``CI=true``,
where they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator

from needs import unavailable

POSTGRES_URL = os.environ.get("UNDERWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def _unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or None if it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'underway[postgres]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL at {POSTGRES_URL} ({exc}); set UNDERWAY_TEST_POSTGRES"


def require_postgres() -> None:
    reason = _unavailable()
    if reason is not None:
        unavailable("PostgreSQL", reason)


def schema_url(schema: str) -> str:
    """The store URL whose tables live in ``schema``."""
    joiner = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{schema}"


def fresh_postgres_url() -> Iterator[str]:
    """Yield the URL of a new, empty schema; drop it afterwards."""
    require_postgres()
    import psycopg

    schema = f"underway_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield schema_url(schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
