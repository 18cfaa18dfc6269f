"""The simulated campus's parameters: personas, their organic behaviour, and the calendar.

Defaults are plausible values, not facts: the source playbooks (shared/domain/SEED_DIGEST.md)
give tolerances and targets, not distributions. Where a number comes from them it says so;
the rest are chosen so the organic campus looks like a campus (a few visits a week for most,
a day-to-day order share around one visit in three) and are meant to be replaced by
`python app.py calibrate` on a tenant's own log. Saved and loaded as JSON (`--params FILE`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from backend.core import documents
from backend.core.calendar import DEFAULT_CALENDAR, check_calendar_name
from simulator.response import ResponseParams

MAX_PARAMS_BYTES = 1024 * 1024  # a calibrated file is a few kB


@dataclass(frozen=True)
class Persona:
    name: str
    share: float  # of the population
    visit_p: float  # daily visit probability of a fully engaged user on a term weekday
    half_life_days: float  # engagement halves in this many days without a good experience
    order_p: float  # probability a visit includes a paid order
    aov_fen: int  # median order value (lognormal)
    aov_sigma: float  # lognormal sigma of order values
    boost: float  # engagement regained by an ordering visit
    churn_base: float  # daily hazard of leaving at full engagement
    churn_slope: float  # added hazard as engagement falls: base + slope·(1 − e)²
    revive_p: float  # daily probability a departed user comes back on their own
    follows_friends: float = 0.0  # 0..1: how much friends' comings and goings move them


PERSONAS: tuple[Persona, ...] = (
    # Regulars: the canteen every other day; slow to drift.
    Persona("regular", 0.30, 0.60, 36, 0.45, 2200, 0.35, 0.10, 0.0040, 0.50, 0.0004),
    # Price-sensitive: come for deals; tolerate ~3 days after an offer ends (SEED_DIGEST §1).
    Persona("price_sensitive", 0.20, 0.40, 6, 0.35, 1800, 0.30, 0.06, 0.0080, 1.00, 0.0003),
    # Content-driven: come for what is new; tolerate ~7 days without it (SEED_DIGEST §1).
    Persona("content_driven", 0.18, 0.45, 12.6, 0.30, 2000, 0.35, 0.08, 0.0064, 1.00, 0.0003),
    # Social: follow their friends in and out (SEED_DIGEST §1: react when >15% of friends leave).
    Persona(
        "social",
        0.14,
        0.40,
        12.6,
        0.30,
        2100,
        0.35,
        0.08,
        0.0064,
        1.00,
        0.0003,
        follows_friends=1.0,
    ),
    # Coupon farmers (羊毛党): rarely come unprompted; redeem and vanish (SEED_DIGEST §2).
    Persona("coupon_farmer", 0.08, 0.10, 4.2, 0.20, 1500, 0.25, 0.02, 0.0160, 1.00, 0.0001),
    # Sleeping dogs: fine left alone; a message reminds them to leave (Ascarza 2018).
    Persona("sleeping_dog", 0.10, 0.35, 27, 0.35, 2000, 0.35, 0.08, 0.0040, 0.50, 0.0002),
)


@dataclass(frozen=True)
class SimParams:
    personas: tuple[Persona, ...] = PERSONAS
    start_engagement: tuple[float, float] = (0.3, 1.0)  # uniform range at the start
    weekend_factor: float = 0.8  # campus food delivery dips at weekends
    exam_factor: float = 0.7  # students study, order less
    break_factor: float = 0.05  # vacations: almost nobody; and nobody churns
    revive_engagement: float = 0.3  # engagement of a user who came back on their own
    # Friends: everyone has a few (drawn at random across the campus); those who follow them
    # (social) visit more on days after their friends were around, and start to leave once
    # more than 15% of their friends have left (SEED_DIGEST §1).
    friends_per_user: int = 6
    friend_pull: float = 0.5  # visit probability × (1 + pull · share of friends out yesterday)
    friend_leave_threshold: float = 0.15
    friend_leave_hazard: float = 0.02  # added daily hazard of leaving past that threshold
    calendar: str = DEFAULT_CALENDAR  # one of CALENDAR_FILES in seeds/
    # Overrides of simulator.response.ResponseParams fields (calibrated response rates);
    # empty: the defaults. A file without it loads with the defaults.
    response: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # calibration notes, kept with the file

    def with_personas(self, **changes) -> SimParams:
        return replace(self, **changes)

    def check(self) -> None:
        total = sum(p.share for p in self.personas)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"persona shares add up to {total}, not 1")
        for p in self.personas:
            for name in ("visit_p", "order_p", "churn_base", "revive_p"):
                if not 0 <= getattr(p, name) <= 1:
                    raise ValueError(f"persona {p.name}: {name} must be a probability")
            if p.half_life_days <= 0 or p.aov_fen <= 0:
                raise ValueError(f"persona {p.name}: half-life and order value must be positive")
            if not 0 <= p.follows_friends <= 1:
                raise ValueError(f"persona {p.name}: follows_friends must be between 0 and 1")
        check_calendar_name(self.calendar)
        if self.friends_per_user < 0 or not 0 <= self.friend_leave_threshold <= 1:
            raise ValueError("friends_per_user must be >= 0 and friend_leave_threshold in 0..1")
        self.response_params()

    def response_params(self) -> ResponseParams:
        """The response model's parameters: the defaults with this file's overrides."""
        known = ResponseParams.__dataclass_fields__
        unknown = sorted(set(self.response) - set(known))
        if unknown:
            raise ValueError(f"response: unknown parameters {unknown}")
        changes = dict(self.response)
        if "response" in changes:  # persona -> rates per message kind (lists in JSON)
            changes["response"] = {p: tuple(v) for p, v in changes["response"].items()}
        return replace(ResponseParams(), **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SimParams:
        """Parameters from a JSON text, read within the bounded loader's limits (a `--params`
        file is untrusted input); ValueError (documents.DocumentError) when it is not."""
        d = documents.load_json(text, max_bytes=MAX_PARAMS_BYTES, reject_duplicates=True)
        if not isinstance(d, dict):
            raise ValueError("a parameter file is a JSON object")
        d["personas"] = tuple(Persona(**p) for p in d["personas"])
        d["start_engagement"] = tuple(d["start_engagement"])
        params = cls(**d)
        params.check()
        return params

    @classmethod
    def load(cls, path: str | Path) -> SimParams:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
