"""WeChat's subscribe-message field types and their limits, as the fake enforces them.

A template's data key names its type (`thing1` -> thing); a value breaking its type's limits
is refused with errcode 47003, as WeChat refuses it.

Field types (`add_template(id, {"thing1": None, "keyword1": "text"}, kind=...)`, the type
inferred from the key without its digits): thing ≤ 20 chars; phrase ≤ 5 Chinese chars; name ≤ 10
chars (≤ 20 if pure ASCII letters/symbols); number ≤ 32 digits, optional decimals;
character_string ≤ 32 ASCII letters/digits/symbols; letter ≤ 32 letters; symbol ≤ 5 symbols;
phone_number ≤ 17 digits/symbols; car_number ≤ 8; amount an optional currency sign plus ≤ 10
digits, optionally ending 元; date a date (plus an optional time); time a date and/or a time
(`2026-11-23 10:00`, `2026年11月23日`, `10:00`), either as a range `a~b`; text (legacy Official
Account keys such as keyword1/first/remark) anything. Values must be non-empty strings.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_DATE = r"\d{4}(?:-\d{1,2}-\d{1,2}|/\d{1,2}/\d{1,2}|年\d{1,2}月\d{1,2}日)"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?"
_MOMENT = re.compile(
    rf"(?P<date>{_DATE})(?:(?:\s+|(?<=日))(?P<time>{_CLOCK}))?|(?P<only>{_CLOCK})", re.ASCII
)
_PATTERNS = {
    "phrase": re.compile(rf"[{_CJK}]+"),
    "number": re.compile(r"\d+(?:\.\d+)?", re.ASCII),
    "letter": re.compile(r"[A-Za-z]+"),
    "symbol": re.compile(r"[^\w\s]+"),
    "character_string": re.compile(r"[!-~]+"),
    "phone_number": re.compile(r"[!-@\[-`{-~]+"),  # digits and ASCII symbols
    "car_number": re.compile(rf"[{_CJK}]?[A-Za-z0-9]+[{_CJK}]?"),
    "amount": re.compile(r"(?:[¥￥$€£]|CNY|RMB|USD)?(\d+(?:\.\d+)?)元?", re.ASCII),
    "name": re.compile(r"[^\d\s][^\d]*"),
}
_MAX_LEN = {
    "thing": 20,
    "phrase": 5,
    "name": 10,
    "letter": 32,
    "symbol": 5,
    "character_string": 32,
    "phone_number": 17,
    "car_number": 8,
}
FIELD_TYPES = (
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
    "text",  # Official Account legacy keys (first, keyword1, remark): any string
)


def field_type(key: str) -> str | None:
    """The field type a data key names (`thing1` -> thing), or None when it names none."""
    kind = key.rstrip("0123456789")
    return kind if kind in FIELD_TYPES and kind != "text" else None


def _moment_ok(text: str, *, need_date: bool) -> bool:
    """A date, a 24-hour time, or both (`2026-11-23 10:00`, `2026年11月23日`, `10:00`)."""
    match = _MOMENT.fullmatch(text.strip())
    if match is None or (need_date and match["date"] is None):
        return False
    if match["date"] is not None:
        year, month, day = (int(n) for n in re.findall(r"\d+", match["date"]))
        try:
            date(year, month, day)
        except ValueError:
            return False
    clock = match["time"] or match["only"]
    if clock is not None:
        hour, minute, *second = (int(n) for n in clock.split(":"))
        if hour > 23 or minute > 59 or (second and second[0] > 59):
            return False
    return True


def field_problem(kind: str, value: Any) -> str | None:
    """Why WeChat would refuse this value for a field of this type (None when it is fine)."""
    if not isinstance(value, str):
        return "invalid"
    if not value:
        return "is empty"
    if kind == "text":
        return None
    if kind in ("time", "date"):
        parts = value.replace("～", "~").split("~")
        ok = len(parts) <= 2 and all(_moment_ok(p, need_date=kind == "date") for p in parts)
        return None if ok else "invalid"
    if kind in _PATTERNS:
        match = _PATTERNS[kind].fullmatch(value)
        if match is None:
            return "invalid"
        if kind == "number" and sum(c.isdigit() for c in value) > 32:
            return "exceeds the length limit"
        if kind == "amount" and sum(c.isdigit() for c in match[1]) > 10:
            return "exceeds the length limit"
    limit = _MAX_LEN.get(kind)
    if kind == "name" and value.isascii():
        limit = 20  # a pure letter/symbol name may be twice as long as a Chinese one
    if limit is not None and len(value) > limit:
        return "exceeds the length limit"
    return None
