"""Who is held out and which arm each user gets: stable hashes and Thompson sampling."""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def salt_of(*parts: object) -> np.uint64:
    """A 64-bit salt from names (tenant, policy, purpose): stable across processes and runs."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def stable_unit(keys: np.ndarray, salt: np.uint64) -> np.ndarray:
    """A uniform number in [0, 1) per key, the same for the same (key, salt) forever.

    splitmix64's finaliser over key XOR salt: Python's hash() is salted per process and
    would move users between holdout and treatment on every restart.
    """
    z = np.asarray(keys).astype(np.uint64) ^ salt
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def pick_by_weight(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise: the column whose cumulative share of the row's weights first exceeds u."""
    total = weights.sum(axis=1, keepdims=True)
    cum = np.cumsum(weights / np.where(total > 0, total, 1.0), axis=1)
    pick = (cum <= u[:, None]).sum(axis=1)
    return np.minimum(pick, weights.shape[1] - 1)


def thompson(
    allowed: np.ndarray,
    successes: np.ndarray,
    failures: np.ndarray,
    floor: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One arm per row: the best draw from each allowed arm's Beta(1 + s, 1 + f) posterior.

    `allowed`, `successes` and `failures` are (users × arms), the posteriors already taken from
    each user's tier. With probability floor × (allowed arms) a row is instead spread evenly
    over its allowed arms, so every arm keeps at least `floor` of the traffic and a loser
    can still prove itself.
    """
    n, k = allowed.shape
    draws = rng.beta(1.0 + successes, 1.0 + failures)
    draws = np.where(allowed, draws, -1.0)
    best = draws.argmax(axis=1)
    n_allowed = allowed.sum(axis=1)
    explore = rng.random(n) < floor * n_allowed
    uniform = pick_by_weight(allowed.astype(np.float64), rng.random(n))
    return np.where(explore, uniform, best)
