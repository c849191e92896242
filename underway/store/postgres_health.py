"""What the PostgreSQL store checks to say it is healthy: that a transaction may write.

A write that changes nothing runs in a transaction that is rolled back: a standby (in recovery),
read-only transactions (``default_transaction_read_only``, set for the role, the database or in
the URL's ``options``) and a role without the rights refuse it. Whether the server's disk has
room is not seen from here (a write that changes nothing needs no page): watch it with
PostgreSQL's own monitoring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import StoreUnhealthy

if TYPE_CHECKING:
    import psycopg

#: Reads whether this transaction could write at all, with the reason when it cannot.
STATE = b"SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS read_only"
#: A statement that writes (so a read-only transaction refuses it) but changes nothing.
WRITE_PROBE = b"DELETE FROM underway_migrations WHERE version < 0"
#: How long the probe may wait for a lock before it says the database cannot write.
PROBE_TIMEOUT_MS = 5000


def write_problem(conn: psycopg.Connection[Any]) -> StoreUnhealthy | None:
    """Try the write in a transaction on ``conn`` and roll it back. A driver error that is not
    about the connection says why it cannot write; a broken connection raises (the store is
    unreachable)."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute(b"SET LOCAL statement_timeout = %d" % PROBE_TIMEOUT_MS)
            state = conn.execute(STATE).fetchone()
            assert state is not None
            if state["recovery"]:
                return cannot_write("the server is a standby (in recovery)")
            if state["read_only"] == "on":
                return cannot_write("transactions are read-only (default_transaction_read_only)")
            conn.execute(WRITE_PROBE)
            raise psycopg.Rollback()
    except psycopg.Error as exc:
        if exc.sqlstate is None or exc.sqlstate.startswith("08"):  # the connection itself
            raise
        return cannot_write(exc.diag.message_primary or type(exc).__name__)
    return None


def cannot_write(why: str) -> StoreUnhealthy:
    return StoreUnhealthy(f"cannot write: {why}", f"the PostgreSQL database cannot be written: {why}")
