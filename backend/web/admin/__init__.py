"""The merchant's admin API (/admin/v1), scoped to the tenant of the X-Api-Key."""

from backend.web.admin import campaign_routes  # noqa: F401  (registers its routes on bp)
from backend.web.admin.routes import bp

__all__ = ["bp"]
