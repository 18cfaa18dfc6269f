"""Where a tenant's nightly scoring state waits for the next night: the `nightly_state` table.

The state is plain arrays (ScoreState.to_arrays and the service's own per-user columns) in a
deflated .npz, read back with `allow_pickle=False`: nothing stored is ever unpickled, so a
row cannot carry code. It is split into parts of PART_BYTES (no driver or database limit on
one value is approached) and written in one transaction, replacing the tenant's last state.

Why a table and not a file in the instance folder: the state describes the database's rows,
so it lives and dies with them (a restore, a copy to another machine, a second app in the
process all carry their own or none), the nightly job may run in a fresh container or on
another host than the web app, and the services (which know no Flask config) reach it
without a path being passed through every caller of `score_tenant`.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from backend.store.db import write_transaction
from backend.store.models import NightlyState

PART_BYTES = 16 * 1024 * 1024
# zlib level 1: ~6x smaller than the raw arrays (mostly zeros: dormant users), ~0.3 s per
# 100k users; level 6 saves another 15% for 5x the time.
COMPRESS_LEVEL = 1


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Numeric arrays as a deflated .npz (no object arrays: np.save refuses to pickle).

    Parameters
    ----------
    arrays : name -> numeric ndarray.

    Returns
    -------
    The .npz bytes, which `unpack` reads back.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(
        buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL
    ) as archive:
        for name, values in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(values), allow_pickle=False)
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """The arrays `pack` wrote; a ValueError for anything that is not plain numeric arrays.

    Parameters
    ----------
    data : .npz bytes.

    Returns
    -------
    name -> ndarray, every one read whole (the archive is closed).
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def save(tenant_id: int, header: dict, arrays: dict[str, np.ndarray]) -> int:
    """Replace the tenant's kept state. Returns the bytes stored.

    Parameters
    ----------
    tenant_id : the tenant's database id.
    header : JSON-able description of the state (services/nightly_state.py).
    arrays : its numeric arrays.

    Returns
    -------
    Size of the stored .npz in bytes.
    """
    data = pack(arrays)
    text = json.dumps(header, sort_keys=True)
    parts = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
    with write_transaction():
        NightlyState.delete().where(NightlyState.tenant == tenant_id).execute()
        for number, chunk in enumerate(parts):
            NightlyState.insert(tenant=tenant_id, part=number, header=text, data=chunk).execute()
    return len(data)


def load(tenant_id: int) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The tenant's kept state, or None when there is none or it cannot be read whole (parts
    missing or from two writes, a damaged archive): the caller then rebuilds.

    Parameters
    ----------
    tenant_id : the tenant's database id.

    Returns
    -------
    (header, arrays) as `save` was given them, or None.
    """
    rows = list(
        NightlyState.select(NightlyState.part, NightlyState.header, NightlyState.data)
        .where(NightlyState.tenant == tenant_id)
        .order_by(NightlyState.part)
        .tuples()
    )
    if not rows or [r[0] for r in rows] != list(range(len(rows))):
        return None
    if len({r[1] for r in rows}) != 1:
        return None
    try:
        header = json.loads(rows[0][1])
        arrays = unpack(b"".join(bytes(r[2]) for r in rows))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        return None
    return header, arrays


def forget(tenant_id: int) -> None:
    """Drop the tenant's kept state (the next night rebuilds it)."""
    with write_transaction():
        NightlyState.delete().where(NightlyState.tenant == tenant_id).execute()
