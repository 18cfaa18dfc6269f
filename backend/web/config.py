"""Configuration from the environment (the contract's variables) with safe defaults."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from backend.services.wechat import DEFAULT_API_BASE
from backend.tasks.queue import default_queue_url


def default_database_url(instance_path: str) -> str:
    """Without DATABASE_URL a SQLite file in the instance folder: `python app.py` works out of
    the box."""
    return "sqlite:///" + str(Path(instance_path) / "huiliu.sqlite3")


def from_env(instance_path: str) -> dict:
    """Read the documented environment variables once, at app creation."""
    mode = os.environ.get("WECHAT_MODE", "dev")
    if mode not in ("dev", "live"):
        raise ValueError(f"WECHAT_MODE must be 'dev' or 'live', not {mode!r}")
    secret = os.environ.get("SECRET_KEY")
    stored = None if secret else _instance_secret(instance_path)
    session_ttl = int(os.environ.get("HUILIU_DASHBOARD_SESSION_S", 8 * 3600))
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL") or default_database_url(instance_path),
        # /status's bearer token (web/ops.py); unset: /status answers loopback clients only.
        "OPS_TOKEN": os.environ.get("HUILIU_OPS_TOKEN", ""),
        # The task queue's storage (backend/tasks/queue.py): a SQLite file here by default.
        "QUEUE_URL": os.environ.get("HUILIU_QUEUE_URL") or default_queue_url(instance_path),
        # Without SECRET_KEY: one kept in the instance folder, shared by every worker on this
        # machine (so a dashboard login or token made by one worker is accepted by the others).
        "SECRET_KEY": secret or stored,
        "WECHAT_MODE": mode,
        "WECHAT_APPID": os.environ.get("WECHAT_APPID", ""),
        "WECHAT_SECRET": os.environ.get("WECHAT_SECRET", ""),
        "WECHAT_API_BASE": os.environ.get("WECHAT_API_BASE", DEFAULT_API_BASE),
        # The Official Account that sends template messages (a different account, optional).
        "WECHAT_OA_APPID": os.environ.get("WECHAT_OA_APPID", ""),
        "WECHAT_OA_SECRET": os.environ.get("WECHAT_OA_SECRET", ""),
        # Delivery: first retry after this many seconds, doubling; attempts before giving up.
        "DELIVERY_RETRY_BASE_S": float(os.environ.get("HUILIU_RETRY_BASE_S", 30)),
        "DELIVERY_MAX_ATTEMPTS": int(os.environ.get("HUILIU_SEND_ATTEMPTS", 5)),
        "MAX_CONTENT_LENGTH": int(os.environ.get("HUILIU_MAX_BODY_BYTES", 2 * 1024 * 1024)),
        "TOKEN_TTL_S": int(os.environ.get("HUILIU_TOKEN_TTL_S", 7200)),
        # Reverse proxies in front that append X-Forwarded-For/-Proto (0: none, the headers
        # are ignored). Behind one, every client has the proxy's address, so without this the
        # per-address limits would be one limit for everybody.
        "TRUSTED_PROXIES": int(os.environ.get("HUILIU_TRUSTED_PROXIES", 0)),
        # Live-mode mini-program logins (each one spends the app's code2Session quota): per
        # client address per minute, failed code exchanges per address per minute, and failed
        # exchanges per tenant per minute (a high circuit breaker: a low one would let a few
        # probing addresses lock every new student of the tenant out).
        "LOGIN_PER_ADDRESS_PER_MIN": int(os.environ.get("HUILIU_LOGIN_PER_ADDRESS_MIN", 60)),
        "LOGIN_FAILURES_PER_ADDRESS_PER_MIN": int(
            os.environ.get("HUILIU_LOGIN_FAILURES_PER_ADDRESS_MIN", 10)
        ),
        "LOGIN_FAILURES_PER_TENANT_PER_MIN": int(
            os.environ.get("HUILIU_LOGIN_FAILURES_PER_TENANT_MIN", 600)
        ),
        # Dashboard sessions: signed cookies that expire this long after login.
        "DASHBOARD_SESSION_TTL_S": session_ttl,
        "PERMANENT_SESSION_LIFETIME": timedelta(seconds=session_ttl),
        "SESSION_COOKIE_SECURE": os.environ.get("HUILIU_SECURE_COOKIES", "") == "1",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
    }


def _instance_secret(instance_path: str) -> str:
    """The machine's own signing key, made once with owner-only permissions."""
    path = Path(instance_path) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a worker racing us either
    # wins (and we read its key) or loses; nobody ever reads a half-written file.
    tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
