"""The SQLite schema: numbered migrations, applied in order, give the schema of a fresh install."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

from underway.exceptions import SchemaError, StoreError
from underway.store import sql
from underway.store.sqlite import SQLiteStore

SchemaRows = list[tuple[str, str, str, str | None]]


def normalize(statement: str | None) -> str | None:
    """The SQL of a schema object without comments and layout."""
    if statement is None:
        return None
    statement = re.sub(r"--[^\n]*", "", statement)
    statement = " ".join(statement.split())
    return re.sub(r"\s*([(),])\s*", r"\1", statement)


def schema_of(path: Path) -> SchemaRows:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    conn.close()
    return sorted((kind, name, table, normalize(text)) for kind, name, table, text in rows)


def run_script(path: Path, script: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(script)
    finally:
        conn.close()


def test_there_are_numbered_migrations() -> None:
    migrations = sql.migrations("sqlite")
    assert migrations
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(re.fullmatch(rf"{m.version:04d}_\w+\.sql", m.name) for m in migrations)


def test_migrations_in_order_give_the_fresh_schema(tmp_path: Path) -> None:
    migrated, fresh = tmp_path / "migrated.db", tmp_path / "fresh.db"
    for migration in sql.migrations("sqlite"):
        run_script(migrated, migration.sql)
    run_script(fresh, sql.schema("sqlite"))
    assert schema_of(migrated) == schema_of(fresh)
    assert {name for kind, name, _, _ in schema_of(fresh) if kind == "table"} >= {"jobs", "events", "workers"}


def test_every_named_query_prepares_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    run_script(path, sql.schema("sqlite"))
    conn = sqlite3.connect(path)
    try:
        for name, template in sql.queries("sqlite").items():
            statement = template.replace("{sources}", "'running'")  # filled in from the transition table
            try:
                conn.execute(f"EXPLAIN {statement}", _dummy_params(statement))
            except sqlite3.Error as exc:  # pragma: no cover - shows which query is broken
                pytest.fail(f"query {name!r} does not fit the schema: {exc}")
    finally:
        conn.close()


def _dummy_params(statement: str) -> dict[str, object] | tuple[object, ...]:
    named = re.findall(r":(\w+)", statement)
    if named:
        return dict.fromkeys(named, None)
    numbered = re.findall(r"\?(\d+)", statement)
    if numbered:
        return (None,) * max(int(n) for n in numbered)
    return (None,) * statement.count("?")


# -- through the store ---------------------------------------------------------------------------


def store_on(path: Path) -> SQLiteStore:
    return SQLiteStore(f"sqlite:///{path}")


@pytest.mark.anyio
async def test_fresh_store_records_every_migration(tmp_path: Path) -> None:
    store = store_on(tmp_path / "u.db")
    try:
        assert await store.migrate() == [m.name for m in sql.migrations("sqlite")]
        assert await store.migrate() == []
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "u.db") as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM underway_migrations ORDER BY 1")]
    conn.close()
    assert versions == [m.version for m in sql.migrations("sqlite")]


@pytest.mark.anyio
@pytest.mark.parametrize("applied", range(1, len(sql.migrations("sqlite")) + 1))
async def test_store_migrates_an_older_database_to_the_fresh_schema(tmp_path: Path, applied: int) -> None:
    known = sql.migrations("sqlite")
    old = tmp_path / "old.db"
    marks = "".join(
        f"INSERT INTO underway_migrations VALUES ({m.version}, '{m.name}', {time.time()});\n"
        for m in known[:applied]
    )
    run_script(
        old,
        "CREATE TABLE underway_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);\n"
        + "".join(m.sql for m in known[:applied])
        + marks,
    )
    fresh = tmp_path / "fresh.db"
    for path, expected in ((old, [m.name for m in known[applied:]]), (fresh, [m.name for m in known])):
        store = store_on(path)
        try:
            assert await store.migrate() == expected
        finally:
            await store.close()
    assert schema_of(old) == schema_of(fresh)


@pytest.mark.anyio
async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    store = store_on(path)
    await store.open()
    await store.close()
    run_script(path, f"INSERT INTO underway_migrations VALUES (9999, '9999_future.sql', {time.time()});")
    newer = store_on(path)
    try:
        with pytest.raises(SchemaError, match="newer than this underway knows"):
            await newer.open()
    finally:
        await newer.close()


@pytest.mark.anyio
async def test_a_new_migration_is_applied_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "u.db"
    store = store_on(path)
    await store.open()
    await store.close()
    known = sql.migrations("sqlite")
    extra = sql.Migration(
        len(known) + 1, f"{len(known) + 1:04d}_notes.sql", "ALTER TABLE jobs ADD note TEXT;"
    )
    monkeypatch.setattr(sql, "migrations", lambda dialect: (*known, extra))
    upgraded = store_on(path)
    try:
        assert await upgraded.migrate() == [extra.name]
        assert await upgraded.migrate() == []
    finally:
        await upgraded.close()
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
    conn.close()
    assert "note" in columns


@pytest.mark.anyio
async def test_a_failing_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "u.db"
    store = store_on(path)
    await store.open()
    await store.close()
    before = schema_of(path)
    known = sql.migrations("sqlite")
    broken = sql.Migration(
        len(known) + 1, f"{len(known) + 1:04d}_broken.sql", "CREATE TABLE half (a TEXT);\nSELEC oops;"
    )
    monkeypatch.setattr(sql, "migrations", lambda dialect: (*known, broken))
    upgraded = store_on(path)
    try:
        with pytest.raises(SchemaError, match=r"oops|syntax"):
            await upgraded.open()
    finally:
        await upgraded.close()
    assert schema_of(path) == before


@pytest.mark.anyio
async def test_a_file_that_is_no_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    path.write_bytes(b"this is not a SQLite database, just some text" * 100)
    store = store_on(path)
    try:
        with pytest.raises(StoreError, match="not a database"):
            await store.open()
    finally:
        await store.close()
