"""Every task module, imported so the worker's Huey knows every task by name (a task queued
by the web app is looked up in the worker's registry)."""

from __future__ import annotations

from backend.tasks import (  # noqa: F401 - registered on import
    delivery,
    failures,
    nightly,
    telemetry,
    trials,
)
