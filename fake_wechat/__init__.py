"""A local HTTP server that answers as WeChat's API does, for tests and development.

    from fake_wechat import FakeWeChat

    with FakeWeChat(appid="wx...", secret="...") as fake:
        ...  # point WECHAT_API_BASE at fake.base_url

Standalone: `python -m fake_wechat.server --port 8765`. The server is fake_wechat/server.py,
the field types it checks fake_wechat/fields.py, its scripted answers and errcodes
fake_wechat/answers.py, what it records fake_wechat/records.py.
"""

from __future__ import annotations

import importlib

__all__ = ["FakeWeChat", "Recorded", "Script"]
_HOMES = {"FakeWeChat": "server", "Recorded": "records", "Script": "answers"}


def __getattr__(name: str):
    # Imported lazily so `python -m fake_wechat.server` does not import the module twice.
    if name in _HOMES:
        return getattr(importlib.import_module(f"fake_wechat.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'fake_wechat' has no attribute {name!r}")
