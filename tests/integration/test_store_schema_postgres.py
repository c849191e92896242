"""The PostgreSQL schema: numbered migrations give the fresh schema, applied once even by
processes that start together; every named statement fits the schema."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from postgres_support import POSTGRES_URL, fresh_postgres_url

from underway.exceptions import ConfigError, SchemaError, StoreError
from underway.store import open_store, sql

pytestmark = pytest.mark.anyio


def _schema_name(url: str) -> str:
    match = re.search(r"search_path%3D(\w+)", url)
    assert match is not None
    return match.group(1)


def catalog(url: str) -> dict[str, list[Any]]:
    """The tables, columns, indexes and constraints of the schema ``url`` points at."""
    import psycopg

    schema = _schema_name(url)
    with psycopg.connect(POSTGRES_URL) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
            " FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
            (schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, replace(indexdef, %s, '') FROM pg_indexes"
            " WHERE schemaname = %s ORDER BY 1, 2",
            (f"{schema}.", schema),
        ).fetchall()
        constraints = conn.execute(
            "SELECT t.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE n.nspname = %s ORDER BY 1, 2",
            (schema,),
        ).fetchall()
        options = conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
            (schema,),
        ).fetchall()
    return {"columns": columns, "indexes": indexes, "constraints": constraints, "options": options}


def run_script(url: str, script: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script.encode())


@pytest.fixture
def other_url() -> Iterator[str]:
    yield from fresh_postgres_url()


def test_there_are_numbered_migrations() -> None:
    migrations = sql.migrations("postgres")
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(re.fullmatch(rf"{m.version:04d}_\w+\.sql", m.name) for m in migrations)


def test_migrations_in_order_give_the_fresh_schema(postgres_url: str, other_url: str) -> None:
    for migration in sql.migrations("postgres"):
        run_script(postgres_url, migration.sql)
    run_script(other_url, sql.schema("postgres"))
    migrated, fresh = catalog(postgres_url), catalog(other_url)
    assert migrated == fresh
    assert {row[0] for row in fresh["columns"]} >= {"underway_jobs", "underway_events", "underway_workers"}


def test_every_named_query_fits_the_schema(postgres_url: str) -> None:
    import psycopg

    run_script(postgres_url, sql.schema("postgres"))
    with psycopg.connect(postgres_url) as conn:
        for name, template in sql.queries("postgres").items():
            copy = re.search(r"COPY (\w+) \(([^)]*)\)\s*FROM STDIN", template)
            if copy is not None:  # COPY cannot be explained: check its table and columns
                table, columns = copy.group(1), [c.strip() for c in copy.group(2).split(",")]
                known = conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                ).fetchall()
                assert set(columns) <= {row[0] for row in known}, f"query {name!r}: {columns}"
                continue
            statement = template.replace("{sources}", "'running'").replace("{where}", "true")
            params = dict.fromkeys(re.findall(r"%\((\w+)\)s", statement))
            try:
                conn.execute(f"EXPLAIN {statement}".encode(), params)
            except psycopg.Error as exc:  # pragma: no cover - shows which query is broken
                pytest.fail(f"query {name!r} does not fit the schema: {exc}")
            finally:
                conn.rollback()


async def test_stores_opening_together_migrate_once(postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(4)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        assert await stores[0].migrate() == []
    finally:
        for store in stores:
            await store.close()
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM underway_migrations ORDER BY 1")]
    assert versions == [m.version for m in sql.migrations("postgres")]


async def test_a_database_newer_than_this_underway_is_refused(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        await store.open()
    finally:
        await store.close()
    run_script(postgres_url, "INSERT INTO underway_migrations VALUES (9999, '9999_future.sql', 0)")
    newer = open_store(postgres_url)
    try:
        with pytest.raises(SchemaError, match="upgrade underway"):
            await newer.open()
    finally:
        await newer.close()


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'underway[postgres]'")):
        open_store("postgresql://127.0.0.1/nowhere")


async def test_an_unreachable_database_is_a_clear_error() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")
    try:
        with pytest.raises(
            StoreError, match=re.escape("cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1")
        ):
            await store.open()
    finally:
        await store.close()
