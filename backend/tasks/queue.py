"""The one queue definition: a Huey instance whose storage `HUILIU_QUEUE_URL` chooses.

- unset: a SQLite file in the instance folder (`instance/queue.sqlite3`), the embedded
  default: nothing to install, one machine;
- `redis://host:port/db`: Redis, so workers on many machines share the tasks;
- `memory://`: run each task at once, in the caller (tests, the end-to-end simulator).

Tasks are registered on `huey` when their modules are imported; which storage it uses is set
by `configure`, which the app factory calls (a task module can be imported before any app
exists). Huey's own clock is only used to fire the periodic ticks each minute; every decision
a task makes reads the app's clock.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from huey import Huey
from huey.storage import MemoryStorage, RedisStorage, SqliteStorage
from redis import ConnectionPool

NAME = "huiliu"
IMMEDIATE_URL = "memory://"

# Results are not kept: what a task did is in the database. Errors are not stored between
# retries either: the final one is recorded (failures.py).
huey = Huey(NAME, results=False, store_intermediate_errors=False, storage_class=MemoryStorage)
_configured: str | None = None


def default_queue_url(instance_path: str) -> str:
    """Without HUILIU_QUEUE_URL: a SQLite file beside the default database."""
    return "sqlite:///" + str(Path(instance_path) / "queue.sqlite3")


def configure(url: str) -> None:
    """Point the queue at the storage `url` names (the same URL twice changes nothing)."""
    global _configured
    if url == _configured:
        return
    scheme = urlparse(url).scheme
    if url == IMMEDIATE_URL:
        huey.storage_class, huey.storage_kwargs = MemoryStorage, {}
        huey.immediate = True
    elif scheme in ("redis", "rediss", "unix"):
        # Timeouts, so a Redis that drops packets makes /readyz say so instead of hanging
        # (longer than Huey's 1 s blocking read of the queue).
        pool = ConnectionPool.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        _use(RedisStorage, {"connection_pool": pool})
    elif scheme == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        _use(SqliteStorage, {"filename": str(path)})
    else:
        raise ValueError(
            f"HUILIU_QUEUE_URL must be sqlite:///FILE, redis://HOST:PORT/DB or {IMMEDIATE_URL}, "
            f"not {url!r}"
        )
    _configured = url


def _use(storage_class: type, kwargs: dict) -> None:
    huey.immediate = False
    huey.storage_class, huey.storage_kwargs = storage_class, kwargs
    huey.storage = huey.create_storage()


def is_immediate() -> bool:
    """Whether tasks run at once in the caller (`memory://`)."""
    return bool(huey.immediate)


def stats() -> dict:
    """The queue as a status page shows it: reachable, tasks waiting, tasks scheduled for
    later (retries, delayed), and the storage's kind (never its address or password)."""
    kind = huey.storage_class.__name__.removesuffix("Storage").lower()
    try:
        return {
            "storage": kind,
            "reachable": True,
            "pending": int(huey.pending_count()),
            "scheduled": int(huey.scheduled_count()),
        }
    except Exception as exc:  # the status page reports an unreachable queue, it never fails
        return {"storage": kind, "reachable": False, "error": type(exc).__name__}
