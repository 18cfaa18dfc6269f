"""Static assets, headers and error pages for the dashboard.

plotly.js is served from the installed plotly package (no CDN: campus LANs may have no
internet). Every page carries a Content-Security-Policy that allows scripts from this server
only, so nothing injected into a page could run.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify, render_template, request, send_file

from backend.errors import ApiError, error_body
from backend.presentation import charts
from backend.web.dashboard.blueprint import bp

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)
ASSET_MAX_AGE_S = 24 * 3600


@bp.get("/assets/plotly.min.js")
def plotly_js():
    """The charts' library from the installed plotly package: campus LANs may have no internet,
    pages use no CDN."""
    return send_file(charts.plotly_js_path(), mimetype="text/javascript", max_age=ASSET_MAX_AGE_S)


@bp.get("/assets/charts.js")
def charts_js():
    """The script that draws the charts a page describes (no inline scripts: the CSP forbids
    them)."""
    return Response(
        charts.render_js(),
        mimetype="text/javascript",
        headers={"Cache-Control": f"max-age={ASSET_MAX_AGE_S}"},
    )


@bp.after_request
def _headers(resp: Response) -> Response:
    """Every dashboard response carries the CSP and friends; a page with tenant data is never
    cached."""
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    if resp.mimetype == "text/html":
        resp.headers.setdefault("Cache-Control", "no-store")  # pages hold tenant data
    return resp


def wants_json() -> bool:
    """The trial page's polling and fetch calls want JSON errors; a person's browser wants a
    page."""
    return request.path.endswith("/status") or request.accept_mimetypes.best == "application/json"


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    """A refusal on the dashboard: JSON for scripts, a readable page for people, same status."""
    if wants_json():
        return jsonify(error_body(exc.code, exc.message, **exc.extra)), exc.status
    current_app.logger.info("dashboard %s: %s", exc.code, exc.message)
    return render_template("dashboard/error.html", error=exc), exc.status
