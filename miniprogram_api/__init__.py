"""The mini-program's API (/mp/v1): what wx.request calls."""

from miniprogram_api.routes import bp

__all__ = ["bp"]
