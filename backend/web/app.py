"""The web application factory: the Flask app, its database, WeChat clients and blueprints.

It knows nothing of the command line: backend/app.py adds the commands, so a command (the
end-to-end campus, the server) can build web apps of its own without an import cycle."""

from __future__ import annotations

import logging
from functools import cache

from flask import Flask, appcontext_pushed, g, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from backend.core.clock import SystemClock
from backend.services.wechat import make_client
from backend.store import db as store_db
from backend.tasks import queue
from backend.web import config, errors, logging_setup, ops
from backend.web.admin import bp as admin_bp
from backend.web.dashboard import bp as dashboard_bp
from backend.web.miniprogram import bp as mp_bp
from backend.web.openapi import documented, openapi


class IdConverter(IntegerConverter):
    """Row ids in paths: positive and within 32 bits, so no id reaches SQL out of range."""

    def __init__(self, url_map) -> None:
        super().__init__(url_map, min=1, max=2**31 - 1)


def create_web_app(overrides: dict | None = None) -> Flask:
    """Build the app; `overrides` (tests, simulator) win over the environment."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config.from_env(app.instance_path))
    app.config.setdefault("CLOCK", SystemClock())
    if overrides:
        app.config.update(overrides)
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies > 0:  # the client's address is the one the nearest of these proxies saw
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    logging_setup.install()  # HUILIU_LOG_FORMAT; serve and worker default to json

    queue.configure(app.config["QUEUE_URL"])
    database = store_db.open_database(app.config["DATABASE_URL"])
    store_db.bind(database)  # the fallback for code run outside any app context
    app.extensions["database"] = database
    _use_own_database(app, database)
    app.extensions["wechat_client"] = _wechat_client_factory(app)
    app.extensions["oa_client"] = _oa_client_factory(app)
    ops.register(app)  # /readyz, /status, /metrics; request timing starts before anything

    @app.before_request
    def _connect():
        """Each request opens its connection (or reuses the thread's) before any route runs."""
        store_db.database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(_exc):
        """Each request gives its connection back, whatever happened, so none leaks."""
        if not store_db.database.is_closed():
            store_db.database.close()

    app.url_map.converters["id"] = IdConverter
    errors.register(app)
    _register_meta_routes(app)

    app.register_blueprint(mp_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(dashboard_bp)
    return app


def _use_own_database(app: Flask, database) -> None:
    """Every app context of this app (each request, each command, each `app.app_context()`)
    uses this app's database, whatever other app the process made since: the database belongs
    to its app, not to whichever app was created last."""

    def entered(_sender: Flask, **_extra) -> None:
        g.huiliu_database_token = store_db.using(database)

    # Connected for this app alone; the app holds the receiver (blinker keeps a weak one), so
    # neither outlives the other.
    app.extensions["database_receiver"] = entered
    appcontext_pushed.connect(entered, app)

    @app.teardown_appcontext
    def _leave(_exc) -> None:
        token = g.pop("huiliu_database_token", None)
        if token is not None:
            store_db.release(token)


def _wechat_client_factory(app: Flask):
    """The mini-program's WeChat client, made on first use: tests and the simulator point it at
    the fake WeChat through the config."""

    @cache
    def client():
        """One client per app, made on first use from the app's config."""
        cfg = app.config
        return make_client(
            cfg["WECHAT_APPID"], cfg["WECHAT_SECRET"], cfg["WECHAT_API_BASE"], cfg["CLOCK"]
        )

    return client


def _oa_client_factory(app: Flask):
    """The Official Account's client, or None when no OA is configured."""

    @cache
    def client():
        cfg = app.config
        if not (cfg["WECHAT_OA_APPID"] and cfg["WECHAT_OA_SECRET"]):
            return None
        return make_client(
            cfg["WECHAT_OA_APPID"], cfg["WECHAT_OA_SECRET"], cfg["WECHAT_API_BASE"], cfg["CLOCK"]
        )

    return client


def _register_meta_routes(app: Flask) -> None:
    """Routes about the service itself rather than a tenant: health and the API's description."""

    @app.get("/healthz")
    @documented(
        "Liveness: 200 when the database answers",
        response={"type": "object", "properties": {"status": {"const": "ok"}}},
        errors=(503,),
    )
    def healthz():
        """The load balancer's and the process manager's check: is this worker able to reach the
        database."""
        try:
            store_db.database.execute_sql("SELECT 1").fetchone()
        except Exception as exc:  # any driver failure means "not healthy"
            logging.getLogger(__name__).error("health check failed: %s", exc)
            return jsonify(
                errors.error_body("database_unavailable", "database does not answer")
            ), 503
        return jsonify({"status": "ok"})

    @app.get("/openapi.json")
    @documented("This OpenAPI document", response={"type": "object"})
    def openapi_json():
        """Clients and their generators read the API from here, built from the routes themselves."""
        return jsonify(openapi(app))
