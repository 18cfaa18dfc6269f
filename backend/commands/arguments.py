"""What several commands read from their arguments: the app's clock, the China day of
`--date`/`--from`/`--to`, the tenants of `--tenant`; each mistake a `ClickException` (a message
and exit code 1, never a traceback)."""

from __future__ import annotations

import click
from flask import current_app

from backend.core.calendar import china_day
from backend.errors import ApiError
from backend.services import scoring
from backend.store.models import Tenant


def now_ms() -> int:
    """The app's clock (tests and the end-to-end simulator set it; production's is real)."""
    return current_app.config["CLOCK"].now_ms()


def day_and_tenants(on: str | None, appid: str | None, now: int) -> tuple[int, list[Tenant]]:
    """The China day a command works on (today by default) and the tenants it covers (all,
    or the one `appid` names)."""
    try:
        day = scoring.parse_day(on, int(china_day(now)))
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    tenants = Tenant.select().order_by(Tenant.id)
    if appid:
        tenants = tenants.where(Tenant.appid == appid)
        if not tenants.exists():
            raise click.ClickException(f"no tenant with appid {appid}")
    return day, list(tenants)


def day_or_none(text: str | None, now: int) -> int | None:
    """An optional YYYY-MM-DD China date as a day number (None when not given)."""
    if text is None:
        return None
    try:
        return scoring.parse_day(text, int(china_day(now)))
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
