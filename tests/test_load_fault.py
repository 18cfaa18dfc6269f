"""A crash under load loses nothing and stores nothing twice (SQLite and PostgreSQL).

`app.py serve --workers 2` runs as a subprocess; a few students post event batches at once;
the server's whole process group (gunicorn master and workers) is killed with SIGKILL mid-load
and started again. The batches that got no answer are sent again, as the phone's retry would,
and so are some that did. Then every event acknowledged before the kill is in the database,
none is there twice, and a resent batch is answered with its stored events as duplicates.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import loadlib  # noqa: E402

CLIENTS = 4
BATCH = 40
ANSWERED_BEFORE_KILL = 12  # batches answered across the clients before the kill


def student_loop(base: str, appid: str, index: int, batches: list, stop: threading.Event) -> None:
    """Post fresh batches until the server stops answering (or `stop`); each is recorded."""
    session = requests.Session()
    try:
        openid, token = loadlib.login(session, base, appid, f"fault-{index}")
        n = 0
        while not stop.is_set():
            now = time.time_ns() // 1_000_000
            events = [
                {"id": f"f{index}-{n}-{k}", "type": "page_view", "ts": now - 1000 * (BATCH - k)}
                for k in range(BATCH)
            ]
            n += 1
            batch = loadlib.Batch(openid, token, events)
            batches.append(batch)
            status, _ = loadlib.post_batch(session, base, batch, timeout=20)
            if status != 200:
                return  # the server is gone: this batch is the one the phone will retry
    finally:
        session.close()


@pytest.mark.slow
def test_sigkill_mid_load_loses_no_acknowledged_event_and_stores_none_twice(db_url, tmp_path):
    env = loadlib.environment(db_url)
    appid, _ = loadlib.seed(env)
    server = loadlib.Server(env, tmp_path / "server.log", workers=2)
    server.start()
    batches: list[loadlib.Batch] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=student_loop, args=(server.base, appid, i, batches, stop), daemon=True
        )
        for i in range(CLIENTS)
    ]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while sum(b.answered for b in batches) < ANSWERED_BEFORE_KILL:
            assert time.monotonic() < deadline, server.log_tail()
            assert any(t.is_alive() for t in threads), "every client stopped before the kill"
            time.sleep(0.01)
        server.kill()  # mid-load: clients are posting as it dies
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    except BaseException:
        server.kill()
        raise
    answered = [b for b in batches if b.answered]
    unanswered = [b for b in batches if not b.answered]
    assert len(answered) >= ANSWERED_BEFORE_KILL and unanswered, (len(answered), len(unanswered))
    acknowledged_before = {(b.openid, i) for b in answered for i in b.acknowledged()}
    assert all(a["accepted"] == BATCH for b in answered for a in b.answers)

    server.start()  # same port, same database, same secret: the phones' tokens still work
    session = requests.Session()
    try:
        resent = unanswered + answered[::3]
        for batch in resent:
            status, _ = loadlib.post_batch(session, server.base, batch)
            assert status == 200, server.log_tail()
    finally:
        session.close()
        server.stop()

    for batch in answered[::3]:  # already stored: every event is a duplicate now
        assert batch.answers[-1] == {"accepted": 0, "duplicates": BATCH, "rejected": []}
    for batch in unanswered:  # some may have been stored before the kill, unanswered
        last = batch.answers[-1]
        assert last["accepted"] + last["duplicates"] == BATCH and not last["rejected"]
    audit = loadlib.audit_events(db_url, appid, batches)
    stored = loadlib.stored_events(db_url, appid)
    assert acknowledged_before <= stored.keys()  # nothing acknowledged was lost
    assert audit["duplicates_stored"] == 0, audit
    assert audit["events_lost"] == 0 and audit["stored_not_acknowledged"] == 0, audit
    assert audit["events_stored"] == len(batches) * BATCH, audit
    # Stored once each: accepted in exactly one answer, or stored unanswered before the kill
    # and then reported as duplicates by the resend.
    committed_unanswered = sum(b.answers[-1]["duplicates"] for b in unanswered)
    assert audit["events_accepted"] + committed_unanswered == audit["events_stored"], audit
