"""Opening the database named by DATABASE_URL (SQLite file by default, PostgreSQL by URL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import parse as parse_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

# Every model binds to this proxy; the app factory points it at the real database.
database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer
    "synchronous": "normal",  # durable at checkpoints; safe with WAL
    "foreign_keys": 1,
    "busy_timeout": 30000,  # wait for the write lock instead of failing under load
    "cache_size": -16000,
}


def open_database(url: str) -> peewee.Database:
    """Build (not connect) the database for a URL."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a write transaction takes the write lock at BEGIN, so two writers never
        # deadlock upgrading read locks; they queue on busy_timeout instead.
        # Pooled: pragmas run once per connection, not once per request.
        return PooledSqliteDatabase(
            path,
            pragmas=SQLITE_PRAGMAS,
            lock_type="IMMEDIATE",
            timeout=30,
            max_connections=32,
            stale_timeout=300,
            check_same_thread=False,
        )
    if scheme in ("postgres", "postgresql"):
        params = parse_url(url)
        name = params.pop("database")
        return PooledPostgresqlDatabase(
            name, max_connections=32, stale_timeout=300, timeout=30, **params
        )
    raise ValueError(f"unsupported DATABASE_URL scheme {scheme!r}: use sqlite:/// or postgresql://")


# SQLite has one writer at a time. Threads of one process queue here, in order, instead of in
# SQLite's busy handler, whose growing sleeps starve some writers (p99 latency).
_sqlite_writer = threading.Lock()


@contextmanager
def write_transaction() -> Iterator[None]:
    """A write transaction; on SQLite, this process's threads take turns for the write lock."""
    if is_sqlite():
        with _sqlite_writer, database.atomic():
            yield
    else:
        with database.atomic():
            yield


def bind(db: peewee.Database) -> None:
    """Point every model at `db` (the app factory does, once per app it makes)."""
    database.initialize(db)


def is_sqlite() -> bool:
    """Whether the bound database is SQLite: its one writer and its SQL differ from
    PostgreSQL's, and a few statements must say so."""
    return isinstance(database.obj, peewee.SqliteDatabase)


def execute_many(sql: str, rows: list[tuple]) -> None:
    """One statement over many parameter rows, in the caller's transaction.

    peewee would build one query per row; the drivers' own batching is an order of
    magnitude faster for the nightly attribution of a large tenant. `sql` uses `?`
    placeholders (rewritten to `%s` for PostgreSQL).
    """
    if not rows:
        return
    if is_sqlite():
        database.connection().executemany(sql, rows)
        return
    from psycopg2.extras import execute_batch

    with database.connection().cursor() as cur:
        execute_batch(cur, sql.replace("?", "%s"), rows, page_size=1000)
