"""Where the shipped data lives (`seeds/`): preset policies, the campus calendar, the demo
tenant. One place, so the job, the API, the simulator and the benchmarks read the same files
whatever module asks."""

from __future__ import annotations

from pathlib import Path

import yaml

from backend.core.calendar import TermCalendar, calendar_from_spec, check_calendar_name

SEEDS_DIR = Path(__file__).resolve().parents[2] / "seeds"
POLICIES_DIR = SEEDS_DIR / "policies"
DEMO_TENANT = SEEDS_DIR / "demo_tenant.yaml"


def preset_names() -> list[str]:
    """The preset policies shipped in seeds/policies, by name."""
    return sorted(p.stem for p in POLICIES_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """seeds/policies/NAME.yaml (it may not exist: callers say what a missing preset means)."""
    return POLICIES_DIR / f"{name}.yaml"


def calendar_spec(name: str) -> dict:
    """The calendar file `name` (refused unless on the allow-list) as its YAML mapping, which
    holds the breaks and, for the simulator, the exam weeks."""
    check_calendar_name(name)
    return yaml.safe_load((SEEDS_DIR / name).read_text(encoding="utf-8"))


def load_calendar(name: str) -> TermCalendar:
    """The term calendar (breaks) of the calendar file `name`."""
    return calendar_from_spec(calendar_spec(name))
