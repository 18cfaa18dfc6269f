"""Dashboard sign-in: a signed, expiring session cookie, and a CSRF token on every form.

A merchant signs in with the tenant's admin API key, or with its appid and the dashboard
password (`python app.py set-dashboard-password`). The session remembers how: revoking that
key or changing that password ends the session at the next request, not when it expires.

The cookie alone is not the session: it names a server-side session row
(backend/services/dashboard_sessions.py, expiring with the session) that every request must find.
Signing out deletes the row, so a copy of the cookie taken before is worth nothing after.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import wraps

from flask import current_app, g, redirect, render_template, request, session, url_for

from backend.errors import ApiError
from backend.services import dashboard_sessions, ratelimit, tenants
from backend.services.keys import tenant_for_key
from backend.web.dashboard.blueprint import bp

SESSION = "dash"
CSRF = "csrf"
MAX_FAILED_SIGN_INS = 10  # per client address, within ...
FAILED_WINDOW_MS = 15 * 60 * 1000  # ... this window; then refused until it has passed
SIGN_IN_PREFIX = "dashboard-sign-in-failures:"  # + client address: the limiter's counter


def _now_s() -> int:
    """The app's clock in seconds, as the session cookie counts its age."""
    return int(current_app.config["CLOCK"].now_ms() // 1000)


def csrf_token() -> str:
    """The session's token for forms and fetch calls (made on first use, even signed out, so
    the sign-in form is protected too)."""
    if CSRF not in session:
        session[CSRF] = secrets.token_urlsafe(32)
    return session[CSRF]


@bp.app_context_processor
def _template_globals() -> dict:
    """Every template can put `csrf_token()` in its forms."""
    return {"csrf_token": csrf_token}


@bp.before_request
def _check_csrf() -> None:
    """Every form and fetch that changes something must carry the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get(CSRF, "")
    if not expected or not hmac.compare_digest(sent, expected):
        raise ApiError(400, "csrf_failed", "the form's CSRF token is missing or wrong; reload")


def _password_tag(tenant) -> str:
    """Names the tenant's password in force without revealing anything usable about it."""
    digest = hashlib.sha256((tenant.dashboard_password_hash or "").encode()).hexdigest()
    return digest[:16]


def _still_valid(via: list, tenant) -> bool:
    """What the session was signed in with (`["key", prefix]` or `["password", tag]`) still
    opens the tenant: revoking the key or changing the password ends it."""
    kind, tag = via
    if kind == "key":
        return dashboard_sessions.key_in_force(tag, tenant.id)
    return kind == "password" and hmac.compare_digest(tag, _password_tag(tenant))


def _session_alive(sid: object, tenant_id: object) -> bool:
    """The server still holds this session, for this tenant, and it has not expired."""
    if not isinstance(sid, str) or not sid:
        return False
    return dashboard_sessions.alive(sid, tenant_id, current_app.config["CLOCK"].now_ms())


def signed_in_tenant():
    """The tenant row of the request's live session, or None: every page and the sign-in
    form ask this first."""
    data = session.get(SESSION)
    if not isinstance(data, dict) or not {"t", "via", "iat", "sid"} <= data.keys():
        return None
    ttl = int(current_app.config["DASHBOARD_SESSION_TTL_S"])
    if not 0 <= _now_s() - int(data["iat"]) < ttl:
        return None
    if not _session_alive(data["sid"], data["t"]):
        return None  # signed out (or never started here): a copied cookie opens nothing
    tenant = dashboard_sessions.tenant(data["t"])
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


def _end_session() -> None:
    """Delete the server-side row of the cookie's session (if any), then the cookie's data."""
    data = session.get(SESSION)
    sid = data.get("sid") if isinstance(data, dict) else None
    if isinstance(sid, str) and sid:
        dashboard_sessions.end(sid)
    session.clear()


def _start_session(tenant, via: list, now_ms: int) -> None:
    """Sign the tenant in: a server-side session row and a cookie naming it."""
    _end_session()  # a fresh session (and CSRF token) on sign-in: no fixation
    ttl_ms = int(current_app.config["DASHBOARD_SESSION_TTL_S"]) * 1000
    sid = secrets.token_urlsafe(32)
    dashboard_sessions.start(sid, tenant.id, now_ms, ttl_ms)  # ended sessions are cleared
    session.permanent = True  # the cookie lives PERMANENT_SESSION_LIFETIME (the TTL)
    session[SESSION] = {"t": tenant.id, "via": via, "iat": _now_s(), "sid": sid}
    csrf_token()


def _safe_next(target: str | None) -> str:
    """Only back into the dashboard: never an open redirect to another site."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("dashboard.overview")


def _sign_in_key() -> str:
    """The limiter's counter of failed sign-ins from this client address."""
    return f"{SIGN_IN_PREFIX}{request.remote_addr or 'unknown'}"


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Merchants sign in with their API key, or appid and dashboard password, behind a per-
    address limit on guesses."""
    if request.method == "GET":
        if signed_in_tenant() is not None:
            return redirect(url_for("dashboard.overview"))
        return render_template("dashboard/login.html", next=request.args.get("next", ""))
    now_ms = current_app.config["CLOCK"].now_ms()
    # The attempt is counted (atomically) before the slow check it pays for: of any number of
    # parallel guesses only MAX_FAILED_SIGN_INS reach a check; the rest are refused unchecked.
    attempt = ratelimit.reserve(_sign_in_key(), MAX_FAILED_SIGN_INS, FAILED_WINDOW_MS, now_ms)
    if not attempt.allowed:
        page = render_template(
            "dashboard/login.html",
            error="尝试次数过多，请 15 分钟后再试",
            next=request.form.get("next", ""),
        )
        return page, 429, {"Retry-After": str(attempt.retry_after_s(now_ms))}
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
        message = "密钥或密码不正确" if (api_key or appid) else "请输入 API 密钥，或 AppID 与密码"
        return render_template(
            "dashboard/login.html", error=message, next=request.form.get("next", "")
        ), 401
    # A success gives back only its own attempt; it does not clear the count: a key of one's
    # own must not reset the guessing at another tenant's password from the same address.
    ratelimit.refund(attempt)
    _start_session(tenant, via, now_ms)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    """Signing out ends the session on the server, so the cookie is worth nothing after, wherever
    copied."""
    _end_session()  # server-side: the session is over for every copy of its cookie
    return redirect(url_for("dashboard.login"))
