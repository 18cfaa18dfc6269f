"""A local HTTP server that answers as WeChat's API does, for tests and development.

    from fake_wechat import FakeWeChat

    with FakeWeChat(appid="wx...", secret="...") as fake:
        ...  # point WECHAT_API_BASE at fake.base_url

Standalone: `python -m fake_wechat.server --port 8765`.
"""

from __future__ import annotations

__all__ = ["FakeWeChat", "Recorded", "Script"]


def __getattr__(name: str):
    # Imported lazily so `python -m fake_wechat.server` does not import the module twice.
    if name in __all__:
        from fake_wechat import server

        return getattr(server, name)
    raise AttributeError(f"module 'fake_wechat' has no attribute {name!r}")
