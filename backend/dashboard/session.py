"""Dashboard sign-in: a signed, expiring session cookie, and a CSRF token on every form.

A merchant signs in with the tenant's admin API key, or with its appid and the dashboard
password (`python app.py set-dashboard-password`). The session remembers how: revoking that
key or changing that password ends the session at the next request, not when it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import wraps

from flask import current_app, g, redirect, render_template, request, session, url_for

from backend.auth import tenant_for_key
from backend.dashboard import bp
from backend.errors import ApiError
from backend.services import tenants
from backend.store.db import database
from backend.store.models import ApiKey, KeyValue, Tenant

SESSION = "dash"
CSRF = "csrf"
MAX_FAILED_SIGN_INS = 10  # per client address, within ...
FAILED_WINDOW_MS = 15 * 60 * 1000  # ... this window; then refused until it has passed


def _now_s() -> int:
    return int(current_app.config["CLOCK"].now_ms() // 1000)


def csrf_token() -> str:
    """The session's token for forms and fetch calls (made on first use, even signed out, so
    the sign-in form is protected too)."""
    if CSRF not in session:
        session[CSRF] = secrets.token_urlsafe(32)
    return session[CSRF]


@bp.app_context_processor
def _template_globals() -> dict:
    return {"csrf_token": csrf_token}


@bp.before_request
def _check_csrf() -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get(CSRF, "")
    if not expected or not hmac.compare_digest(sent, expected):
        raise ApiError(400, "csrf_failed", "the form's CSRF token is missing or wrong; reload")


def _password_tag(tenant: Tenant) -> str:
    """Names the password in force without revealing anything usable about it."""
    digest = hashlib.sha256((tenant.dashboard_password_hash or "").encode()).hexdigest()
    return digest[:16]


def _still_valid(via: list, tenant: Tenant) -> bool:
    kind, tag = via
    if kind == "key":
        key = ApiKey.get_or_none((ApiKey.prefix == tag) & ApiKey.revoked_ms.is_null())
        return key is not None and key.tenant_id == tenant.id
    return kind == "password" and hmac.compare_digest(tag, _password_tag(tenant))


def signed_in_tenant() -> Tenant | None:
    data = session.get(SESSION)
    if not isinstance(data, dict) or not {"t", "via", "iat"} <= data.keys():
        return None
    ttl = int(current_app.config["DASHBOARD_SESSION_TTL_S"])
    if not 0 <= _now_s() - int(data["iat"]) < ttl:
        return None
    tenant = Tenant.get_or_none(Tenant.id == data["t"])
    if tenant is None or not _still_valid(data["via"], tenant):
        return None
    return tenant


def login_required(view):
    """Pages: send the signed-out to the sign-in page. Sets g.tenant and g.tenant_id."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        tenant = signed_in_tenant()
        if tenant is None:
            session.pop(SESSION, None)
            if request.path.endswith("/status"):
                raise ApiError(401, "signed_out", "the dashboard session has ended; sign in")
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        g.tenant = tenant
        g.tenant_id = tenant.id
        return view(*args, **kwargs)

    return wrapped


def _start_session(tenant: Tenant, via: list) -> None:
    session.clear()  # a fresh session (and CSRF token) on sign-in: no fixation
    session.permanent = True  # the cookie lives PERMANENT_SESSION_LIFETIME (the TTL)
    session[SESSION] = {"t": tenant.id, "via": via, "iat": _now_s()}
    csrf_token()


def _safe_next(target: str | None) -> str:
    """Only back into the dashboard: never an open redirect to another site."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("dashboard.overview")


def _failures_key() -> str:
    return f"dashboard-sign-in-failures:{request.remote_addr or 'unknown'}"


def _failures(now_ms: int) -> int:
    row = KeyValue.get_or_none(KeyValue.key == _failures_key())
    if row is None or (row.expires_ms or 0) <= now_ms:
        return 0
    return int(row.value)


def _count_failure(now_ms: int) -> None:
    """One more wrong key or password from this address (shared by every worker)."""
    with database.atomic():
        if _failures(now_ms) == 0:  # a new window opens with this failure
            fields = {KeyValue.value: "1", KeyValue.expires_ms: now_ms + FAILED_WINDOW_MS}
            KeyValue.insert(
                key=_failures_key(), value="1", expires_ms=now_ms + FAILED_WINDOW_MS
            ).on_conflict(conflict_target=[KeyValue.key], update=fields).execute()
        else:
            count = _failures(now_ms) + 1
            KeyValue.update(value=str(count)).where(KeyValue.key == _failures_key()).execute()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if signed_in_tenant() is not None:
            return redirect(url_for("dashboard.overview"))
        return render_template("dashboard/login.html", next=request.args.get("next", ""))
    now_ms = current_app.config["CLOCK"].now_ms()
    if _failures(now_ms) >= MAX_FAILED_SIGN_INS:
        return render_template(
            "dashboard/login.html",
            error="尝试次数过多，请 15 分钟后再试",
            next=request.form.get("next", ""),
        ), 429
    api_key = request.form.get("api_key", "").strip()
    appid = request.form.get("appid", "").strip()
    password = request.form.get("password", "")
    tenant = None
    via: list = []
    if api_key:
        tenant = tenant_for_key(api_key)
        via = ["key", api_key.split("_", 2)[1]] if tenant else []
    elif appid and password:
        tenant = tenants.check_dashboard_password(appid, password)
        via = ["password", _password_tag(tenant)] if tenant else []
    if tenant is None:
        _count_failure(now_ms)
        message = "密钥或密码不正确" if (api_key or appid) else "请输入 API 密钥，或 AppID 与密码"
        return render_template(
            "dashboard/login.html", error=message, next=request.form.get("next", "")
        ), 401
    # A success does not clear the count: a key of one's own must not reset the guessing
    # at another tenant's password from the same address.
    _start_session(tenant, via)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.login"))
