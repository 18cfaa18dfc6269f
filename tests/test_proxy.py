"""Behind a reverse proxy every request comes from the proxy's address: with
HUILIU_TRUSTED_PROXIES the per-address limits count the client the proxy saw instead."""

from __future__ import annotations

import pytest
from helpers.admin_session import sign_in
from helpers.app import build_app, close_app

from backend.web import config
from backend.web.dashboard.session import MAX_FAILED_SIGN_INS

PROXY = "127.0.0.1"


def _guess_from(client, forwarded_for: str, key: str = "hl_00000000_guess") -> int:
    client.environ_base.update(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded_for)
    return sign_in(client, key).status_code


@pytest.fixture
def proxied_app(db_url, clock):
    app = build_app(db_url, clock, TRUSTED_PROXIES=1)
    yield app
    close_app(app)


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_limit(proxied_app):
    client = proxied_app.test_client()
    for _ in range(MAX_FAILED_SIGN_INS):
        assert _guess_from(client, "203.0.113.7") == 401
    assert _guess_from(client, "203.0.113.7") == 429  # this client has used its guesses
    assert _guess_from(client, "198.51.100.9") == 401  # another client behind the same proxy
    # only the address the trusted proxy appended counts, not one the client wrote itself
    assert _guess_from(client, "198.51.100.9, 203.0.113.7") == 429


def test_without_trusted_proxies_the_forwarded_header_is_ignored(app):
    assert app.config["TRUSTED_PROXIES"] == 0
    client = app.test_client()
    for i in range(MAX_FAILED_SIGN_INS):
        assert _guess_from(client, f"203.0.113.{i}") == 401
    assert _guess_from(client, "198.51.100.9") == 429  # a header anyone can send counts for nothing


def test_trusted_proxies_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HUILIU_TRUSTED_PROXIES", raising=False)
    assert config.from_env(str(tmp_path))["TRUSTED_PROXIES"] == 0
    monkeypatch.setenv("HUILIU_TRUSTED_PROXIES", "2")
    assert config.from_env(str(tmp_path))["TRUSTED_PROXIES"] == 2
