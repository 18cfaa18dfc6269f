"""The merchant's dashboard: server-rendered pages under /admin, in Simplified Chinese.

Pages read through the same services as the admin API (/admin/v1) and `python app.py report`,
so a number on a page is the number the API and the command give for the same filter.
"""

from flask import Blueprint

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
)

from backend.web.dashboard import assets, labels, pages, session, trials  # noqa: E402,F401
