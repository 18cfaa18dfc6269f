"""The web layer: the Flask application factory (`backend.web.app.create_app`), the
JSON API blueprints, the dashboard pages, the OpenAPI document and the production server."""
