"""What the fake keeps: the requests it received, the templates registered, the messages sent.

Tests read these to check what a client sent and what reached whom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)
    body: Any = None  # a POST's parsed JSON body; None for GETs and bodies that are not JSON


@dataclass(frozen=True)
class Template:
    """A message template registered with the fake: data key -> field type."""

    template_id: str
    kind: str  # "subscribe" (mini-program) or "template" (Official Account)
    fields: dict[str, str]


@dataclass(frozen=True)
class Sent:
    """One message the fake delivered."""

    kind: str  # "subscribe" or "template"
    openid: str
    template_id: str
    data: dict[str, str]  # data key -> value
    page: str | None  # subscribe: the page the card opens
    url: str | None  # template: the link
    at: float  # time.monotonic() when delivered
    miniprogram: dict | None = None  # template: {"appid", "pagepath"}
    miniprogram_state: str | None = None  # subscribe
    lang: str | None = None  # subscribe
    msgid: int | None = None  # template: the msgid answered


def default_openid_rule(openid: str) -> bool:
    """Which touser values the fake accepts as openids: any but empty or `bad_...`."""
    return bool(openid) and not openid.startswith("bad_")
