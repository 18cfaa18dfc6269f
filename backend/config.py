"""Configuration from the environment (the contract's variables) with safe defaults."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_API_BASE = "https://api.weixin.qq.com/"


def default_database_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "huiliu.sqlite3")


def from_env(instance_path: str) -> dict:
    """Read the documented environment variables once, at app creation."""
    mode = os.environ.get("WECHAT_MODE", "dev")
    if mode not in ("dev", "live"):
        raise ValueError(f"WECHAT_MODE must be 'dev' or 'live', not {mode!r}")
    secret = os.environ.get("SECRET_KEY")
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL") or default_database_url(instance_path),
        # Without SECRET_KEY tokens die with the process; fine for dev, documented for prod.
        "SECRET_KEY": secret or secrets.token_hex(32),
        "SECRET_KEY_IS_EPHEMERAL": secret is None,
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
    }
