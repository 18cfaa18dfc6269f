"""Recall policy files: what a merchant writes, checked against one JSON schema.

A policy is plain data (YAML on disk, JSON in the database). `parse_policy` turns the text into
a frozen `Policy`; every mistake becomes a `PolicyError` that names the field and, for YAML
text, the line it is on. The schema is exported as JSON (`policy_schema()`) so editors and the
admin API can check policies the same way. docs/policies.md documents each field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from backend.core import documents
from backend.core.rfm import SEGMENT_NAMES
from backend.core.tiers import TIERS

CHANNELS = ["subscribe", "oa_template", "sms", "in_app"]
SUBSCRIBE, OA_TEMPLATE, SMS, IN_APP = range(4)
MESSAGE_KINDS = ["content", "coupon", "caring", "reminder"]
TRIGGER_EVENTS = ["payment_failed", "cart_abandoned", "coupon_expiring"]
# Triggers decided when their event arrives (services/campaigns/triggers.py); the nightly job
# leaves them alone. coupon_expiring is the nightly job's: it finds the coupons itself.
EVENT_TRIGGERS = ("payment_failed", "cart_abandoned")
RANK_BY = ["risk", "uplift", "value"]

# The playbooks' ceilings (SEED_DIGEST §3): a policy may be stricter, never looser.
MAX_TOUCHES_PER_30D = 3
MAX_PER_CHANNEL_WEEK = {"subscribe": 3, "oa_template": 3, "sms": 2, "in_app": 7}
DEFAULT_COST_FEN = {"subscribe": 0, "oa_template": 0, "sms": 5, "in_app": 0}
NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"

# Touches one arm's journey may hold; touch_order (core/policy/history.py) relies on it.
MAX_TOUCHES_PER_ARM = 3
_NAME = {"type": "string", "pattern": NAME_PATTERN}
_FEN = {"type": "integer", "minimum": 0, "maximum": 10**12}
_SHARE = {"type": "number", "minimum": 0, "maximum": 1}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Huiliu recall policy",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "arms", "messages"],
    "properties": {
        "name": _NAME,
        "description": {"type": "string", "maxLength": 2000},
        "trigger": {
            "type": "object",
            "additionalProperties": False,
            "required": ["event"],
            "properties": {"event": {"enum": TRIGGER_EVENTS}},
        },
        "eligibility": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "tiers": {"type": "array", "items": {"enum": TIERS}, "uniqueItems": True},
                "segments": {
                    "type": "array",
                    "items": {"enum": SEGMENT_NAMES},
                    "uniqueItems": True,
                },
                "min_days_silent": {"type": "integer", "minimum": 0, "maximum": 3650},
                "max_days_silent": {"type": "integer", "minimum": 0, "maximum": 3650},
                "worth_recalling": {"enum": ["any", "yes", "no"]},
                "min_value_fen": _FEN,
            },
        },
        "targeting": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"rank_by": {"enum": RANK_BY}, "top_share": _SHARE},
        },
        "holdout_share": {"type": "number", "minimum": 0, "maximum": 0.9},
        "allocation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "method": {"enum": ["fixed", "thompson"]},
                "floor": {"type": "number", "minimum": 0, "maximum": 0.5},
                "min_samples": {"type": "integer", "minimum": 0, "maximum": 100000},
            },
        },
        "arms": {
            "type": "array",
            "minItems": 1,
            "maxItems": 16,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "touches"],
                "properties": {
                    "name": _NAME,
                    "tiers": {"type": "array", "items": {"enum": TIERS}, "uniqueItems": True},
                    "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                    "touches": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_TOUCHES_PER_ARM,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["day", "channel", "message"],
                            "properties": {
                                "day": {"type": "integer", "minimum": 0, "maximum": 60},
                                "channel": {"enum": CHANNELS},
                                "message": _NAME,
                                "coupon": {"type": "string", "minLength": 1, "maxLength": 100},
                            },
                        },
                    },
                },
            },
        },
        "messages": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind"],
                "properties": {
                    "kind": {"enum": MESSAGE_KINDS},
                    "template_id": {"type": "string", "minLength": 1, "maxLength": 128},
                    "page": {"type": "string", "minLength": 1, "maxLength": 256},
                    "fields": {
                        "type": "object",
                        "propertyNames": {"pattern": "^[a-z_]+[0-9]+$"},
                        "additionalProperties": {"type": "string", "maxLength": 200},
                    },
                    "title": {"type": "string", "minLength": 1, "maxLength": 40},
                    "text": {"type": "string", "minLength": 1, "maxLength": 300},
                },
            },
        },
        "timing": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "lapse_after_days": {"type": "integer", "minimum": 0, "maximum": 365},
                "send_hour": {
                    "oneOf": [
                        {"type": "integer", "minimum": 0, "maximum": 23},
                        {"enum": ["usual", "now"]},
                    ]
                },
                "grace_days": {"type": "integer", "minimum": 0, "maximum": 14},
            },
        },
        "caps": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "touches_per_30d": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TOUCHES_PER_30D,
                },
                "per_channel_week": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        ch: {"type": "integer", "minimum": 0, "maximum": top}
                        for ch, top in MAX_PER_CHANNEL_WEEK.items()
                    },
                },
                "run_budget_fen": _FEN,
            },
        },
        "stop": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "stop_loss_ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
                "stop_loss_min_touches": {"type": "integer", "minimum": 1, "maximum": 10**6},
                "suppress_after_ignored": {"type": "integer", "minimum": 1, "maximum": 20},
            },
        },
        "attribution_window_days": {"type": "integer", "minimum": 1, "maximum": 60},
        "costs_fen": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                ch: {"type": "integer", "minimum": 0, "maximum": 10000} for ch in CHANNELS
            },
        },
    },
}
_VALIDATOR = Draft202012Validator(SCHEMA)


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the field (and line, for YAML)."""

    def __init__(
        self, message: str, field: str = "", line: int | None = None, code: str = "invalid_policy"
    ) -> None:
        where = field or "policy"
        if line is not None:
            where = f"line {line}: {where}"
        super().__init__(f"{where}: {message}")
        self.field = field
        self.line = line
        self.code = code  # the API error code: invalid_policy, or a document limit's code


@dataclass(frozen=True)
class Touch:
    """One step of an arm's journey: on which day, by which channel, which message."""

    day: int  # days after the journey starts (lapse, or the trigger event)
    channel: int  # index into CHANNELS
    message: str
    coupon: str | None


@dataclass(frozen=True)
class Arm:
    """One variant of the policy's treatment: who it serves, its traffic share, its touches."""

    name: str
    tiers: tuple[int, ...]  # tier indices this arm serves; empty = all
    share: float
    touches: tuple[Touch, ...]


@dataclass(frozen=True)
class Message:
    """A message a touch sends: a WeChat template's fields, or a text (SMS, in-app card)."""

    kind: str
    template_id: str | None
    page: str | None
    fields: dict[str, str]
    title: str | None
    text: str | None


@dataclass(frozen=True)
class Policy:
    """A parsed policy file (docs/policies.md documents each field), what decide reads."""

    name: str
    description: str
    trigger: str | None
    tiers: tuple[int, ...]
    segments: tuple[int, ...]  # empty = any
    min_days_silent: int
    max_days_silent: int
    worth_recalling: str
    min_value_fen: int
    rank_by: str
    top_share: float
    holdout_share: float
    allocation: str
    bandit_floor: float
    bandit_min_samples: int
    arms: tuple[Arm, ...]
    messages: dict[str, Message]
    lapse_after_days: int
    send_hour: int | None  # None: each user's usual hour
    send_now: bool  # trigger policies: as soon as quiet hours allow
    grace_days: int
    touches_per_30d: int
    per_channel_week: tuple[int, ...]  # per CHANNELS entry
    run_budget_fen: int | None
    stop_loss_ratio: float
    stop_loss_min_touches: int
    suppress_after_ignored: int
    attribution_window_days: int
    costs_fen: tuple[int, ...]  # per CHANNELS entry
    source: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_steps(self) -> int:
        """The longest arm's number of touches (the width of decide's touch table)."""
        return max(len(a.touches) for a in self.arms)


def policy_schema() -> dict:
    """The policy file's JSON Schema, for editors and GET /admin/v1/policy-schema."""
    return SCHEMA


def _line_of(root: yaml.Node | None, path: list) -> int | None:
    """The 1-based line of the deepest YAML node along `path` that exists."""
    node, line = root, None
    for key in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    child = v
                    line = k.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(key, int)
            and 0 <= key < len(node.value)
        ):
            child = node.value[key]
        node = child
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (for line numbers), read by the bounded loader.

    JSON text is read as JSON and YAML as YAML (documents.load_text), the same way when a
    policy is checked and every time it is loaded again: what validates is what runs.
    Duplicate keys, unsafe tags, unstorable strings and oversized documents are errors; JSON
    policies are held to the YAML size limit too (a real policy is a few KB).
    """
    try:
        return documents.load_text(text, max_bytes=documents.MAX_YAML_BYTES)
    except documents.DocumentError as exc:
        code = exc.code if exc.code in documents.LIMIT_CODES else "invalid_policy"
        raise PolicyError(exc.problem, field=exc.path, line=exc.line, code=code) from None


def _lines_for(text: str) -> yaml.Node | None:
    """Line numbers for a policy read as JSON: JSON text is (almost always) YAML too."""
    try:
        root, loader = documents.compose_yaml(text)
    except documents.DocumentError:
        return None
    loader.dispose()
    return root


def parse_policy(source: str | dict) -> Policy:
    """A Policy from YAML text or an already-parsed dict; PolicyError on any mistake."""
    root = None
    data = source
    if isinstance(source, str):
        data, root = load_yaml(source)
        if root is None and documents.looks_like_json(source):
            root = _lines_for(source)
    if not isinstance(data, dict):
        raise PolicyError("a policy must be a mapping of fields", line=1 if root else None)
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        err = errors[0]
        parts = list(err.absolute_path)
        message = err.message
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            if extra:
                parts.append(extra[0])
                message = "unknown field"
        raise PolicyError(message, field=_path(parts), line=_line_of(root, parts))
    return _build(data, root)


def _build(d: dict, root: yaml.Node | None) -> Policy:
    """The Policy of a schema-valid document, after the checks the schema cannot express
    (cross-field rules); each failure names its field and line."""

    def fail(message: str, *parts) -> PolicyError:
        return PolicyError(message, field=_path(list(parts)), line=_line_of(root, list(parts)))

    elig = d.get("eligibility", {})
    tiers = tuple(TIERS.index(t) for t in elig.get("tiers", ["low_frequency", "churn_risk"]))
    min_silent = elig.get("min_days_silent", 0)
    max_silent = elig.get("max_days_silent", 3650)
    if max_silent < min_silent:
        raise fail("must not be below min_days_silent", "eligibility", "max_days_silent")
    messages = {
        name: Message(
            kind=m["kind"],
            template_id=m.get("template_id"),
            page=m.get("page"),
            fields=dict(m.get("fields", {})),
            title=m.get("title"),
            text=m.get("text"),
        )
        for name, m in d["messages"].items()
    }
    arms = _arms(d, tiers, messages, fail)
    target = d.get("targeting", {})
    alloc = d.get("allocation", {})
    if alloc.get("floor", 0.1) * len(d["arms"]) > 1:
        raise fail("floor × number of arms must not exceed 1", "allocation", "floor")
    timing = d.get("timing", {})
    caps = d.get("caps", {})
    week = caps.get("per_channel_week", {})
    stop = d.get("stop", {})
    costs = d.get("costs_fen", {})
    send_hour = timing.get("send_hour", 10)
    if send_hour == "now" and not d.get("trigger"):
        raise fail(
            "'now' is for trigger policies; a nightly policy needs an hour", "timing", "send_hour"
        )
    return Policy(
        name=d["name"],
        description=d.get("description", ""),
        trigger=(d.get("trigger") or {}).get("event"),
        tiers=tiers,
        segments=tuple(SEGMENT_NAMES.index(s) for s in elig.get("segments", [])),
        min_days_silent=min_silent,
        max_days_silent=max_silent,
        worth_recalling=elig.get("worth_recalling", "any"),
        min_value_fen=elig.get("min_value_fen", 0),
        rank_by=target.get("rank_by", "risk"),
        top_share=float(target.get("top_share", 1.0)),
        holdout_share=float(d.get("holdout_share", 0.1)),
        allocation=alloc.get("method", "fixed"),
        bandit_floor=float(alloc.get("floor", 0.1)),
        bandit_min_samples=alloc.get("min_samples", 30),
        arms=tuple(arms),
        messages=messages,
        lapse_after_days=timing.get("lapse_after_days", 3),
        send_hour=send_hour if isinstance(send_hour, int) else None,
        send_now=send_hour == "now",
        grace_days=timing.get("grace_days", 2),
        touches_per_30d=caps.get("touches_per_30d", MAX_TOUCHES_PER_30D),
        per_channel_week=tuple(week.get(ch, MAX_PER_CHANNEL_WEEK[ch]) for ch in CHANNELS),
        run_budget_fen=caps.get("run_budget_fen"),
        stop_loss_ratio=float(stop.get("stop_loss_ratio", 0.3)),
        stop_loss_min_touches=stop.get("stop_loss_min_touches", 50),
        suppress_after_ignored=stop.get("suppress_after_ignored", 3),
        attribution_window_days=d.get("attribution_window_days", 7),
        costs_fen=tuple(costs.get(ch, DEFAULT_COST_FEN[ch]) for ch in CHANNELS),
        source=d,
    )


def _arms(d: dict, tiers: tuple[int, ...], messages: dict[str, Message], fail) -> list[Arm]:
    """The arms, each checked: unique names, tiers the policy serves, touch days increasing,
    messages that exist and fit their channel."""
    arms = []
    names: set[str] = set()
    for i, a in enumerate(d["arms"]):
        if a["name"] in names or a["name"] == "holdout":
            raise fail("arm names must be unique and not 'holdout'", "arms", i, "name")
        names.add(a["name"])
        arm_tiers = tuple(TIERS.index(t) for t in a.get("tiers", []))
        if arm_tiers and not set(arm_tiers) & set(tiers) and not d.get("trigger"):
            raise fail("serves no tier the policy is eligible for", "arms", i, "tiers")
        touches = []
        last_day = -1
        for j, t in enumerate(a["touches"]):
            where = ("arms", i, "touches", j)
            if t["day"] <= last_day:
                raise fail("touch days must increase", *where, "day")
            last_day = t["day"]
            msg = messages.get(t["message"])
            if msg is None:
                raise fail(f"no message named {t['message']!r} in messages", *where, "message")
            _check_message_fits(msg, t["channel"], fail, ("messages", t["message"]))
            touches.append(
                Touch(t["day"], CHANNELS.index(t["channel"]), t["message"], t.get("coupon"))
            )
        arms.append(Arm(a["name"], arm_tiers, float(a.get("share", 1)), tuple(touches)))
    return arms


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
PLACEHOLDERS = {"coupon_name", "coupon_amount", "expires", "days_silent", "app_name", "today"}


def _check_message_fits(msg: Message, channel: str, fail, where: tuple) -> None:
    """A message must carry what its channel needs, and only placeholders we can fill."""
    if channel in ("subscribe", "oa_template"):
        if not msg.template_id:
            raise fail(f"a {channel} message needs template_id", *where, "template_id")
        if not msg.fields:
            raise fail(f"a {channel} message needs fields", *where, "fields")
    elif not msg.text:
        raise fail(f"an {channel} message needs text", *where, "text")
    for key, text in [*msg.fields.items(), ("text", msg.text or ""), ("title", msg.title or "")]:
        for name in _PLACEHOLDER.findall(text):
            if name not in PLACEHOLDERS:
                part = ("fields", key) if key not in ("text", "title") else (key,)
                raise fail(
                    f"unknown placeholder {{{name}}}; known: {sorted(PLACEHOLDERS)}", *where, *part
                )
