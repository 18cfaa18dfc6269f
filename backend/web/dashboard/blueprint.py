"""The dashboard's blueprint, apart from its routes: each route module registers on it, and
the package gathers them, so no module imports the package that imports it."""

from flask import Blueprint

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
)
