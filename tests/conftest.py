"""Fixtures: every database test runs on SQLite and on PostgreSQL.

The PostgreSQL lane uses HUILIU_TEST_POSTGRES_URL (`.ci/run` starts a local server and sets it).
Without it the lane is skipped on a laptop, but fails under CI so it can never silently vanish.
The task queue's Redis (`redis_url`) is the same: HUILIU_TEST_REDIS_URL, set by `.ci/run`.

Only fixtures live here; the helpers they are built from (and that tests call themselves) are
in tests/helpers/, which test modules import instead of this file or each other.
"""

from __future__ import annotations

import os
import threading

import pytest
from helpers.app import T0, TenantInfo, build_app, close_app, make_tenant
from werkzeug.serving import make_server

from backend.core.clock import FixedClock

POSTGRES_URL = os.environ.get("HUILIU_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("HUILIU_TEST_REDIS_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'huiliu.sqlite3'}"
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI is set but HUILIU_TEST_POSTGRES_URL is not: the Postgres lane must run")
        pytest.skip("set HUILIU_TEST_POSTGRES_URL to run the PostgreSQL lane")
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    """A Redis database for the task queue, emptied first (FLUSHDB: only the db the URL
    names, so point it at a spare one, e.g. /15)."""
    if not REDIS_URL:
        if os.environ.get("CI"):
            pytest.fail("CI is set but HUILIU_TEST_REDIS_URL is not: the Redis lane must run")
        pytest.skip("set HUILIU_TEST_REDIS_URL to run the tests that need Redis")
    import redis  # only the Redis lane needs the client

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def app(db_url, clock):
    app = build_app(db_url, clock)
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tenant(app) -> TenantInfo:
    return make_tenant(app, "wxtest00000000001")


@pytest.fixture
def other_tenant(app) -> TenantInfo:
    return make_tenant(app, "wxtest00000000002")


@pytest.fixture
def live_server(app):
    """The app on a real threaded HTTP server on loopback; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
