"""The merchant's dashboard: server-rendered pages under /admin, in Simplified Chinese.

Pages read through the same services as the admin API (/admin/v1) and `python app.py report`,
so a number on a page is the number the API and the command give for the same filter.
"""

from backend.web.dashboard import assets, labels, pages, session, trials
from backend.web.dashboard.blueprint import bp

# The route modules register on `bp` when imported; importing them here is what loads them.
__all__ = ["assets", "bp", "labels", "pages", "session", "trials"]
