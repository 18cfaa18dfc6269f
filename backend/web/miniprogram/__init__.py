"""The mini-program's API (/mp/v1): what wx.request calls."""

from backend.web.miniprogram.routes import bp

__all__ = ["bp"]
