"""Recall policies: the file format (spec), the decision function and its guard rails."""

from backend.core.policy.decide import (
    HOLDOUT,
    NOT_DUE,
    NOT_ELIGIBLE,
    REASONS,
    SEND,
    SKIPPED,
    STATUSES,
    Decisions,
    PolicyState,
    UserState,
    decide,
)
from backend.core.policy.spec import CHANNELS, Policy, PolicyError, parse_policy, policy_schema

__all__ = [
    "CHANNELS",
    "HOLDOUT",
    "NOT_DUE",
    "NOT_ELIGIBLE",
    "REASONS",
    "SEND",
    "SKIPPED",
    "STATUSES",
    "Decisions",
    "Policy",
    "PolicyError",
    "PolicyState",
    "UserState",
    "decide",
    "parse_policy",
    "policy_schema",
]
