"""The daily recall job's summary as terminal text (`run-campaigns` without `--json`)."""

from __future__ import annotations


def campaign_text(r: dict) -> str:
    """The job's summary for a terminal: totals, then per policy who gets what (the JSON
    form is `campaigns.run`'s summary itself)."""
    head = "DRY RUN — nothing written or sent\n" if r["dry_run"] else ""
    lines = [
        f"{head}{r['tenant']} {r['date']}: new decisions {r['decided']} (queued {r['queued']}, "
        f"held out {r['held_out']}, skipped {r['skipped']}); delivered now: sent {r['sent']}, "
        f"waiting {r['deferred']}, failed {r['failed']}"
    ]
    if r.get("quiet_hours_now") and not r["dry_run"]:
        lines.append("  it is quiet hours in China (22:00–08:00): messages wait until 08:00")
    if r["skipped_by_reason"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped_by_reason"].items()))
        lines.append(f"  skipped because: {why}")
    for bad in r.get("policies_unreadable", []):
        lines.append(
            f"  policy {bad['policy']} not run: its stored source cannot be read "
            f"({bad['error']}); fix it with PUT /admin/v1/policies/{bad['policy']}"
        )
    for name, p in r["policies"].items():
        lines.append(
            f"  policy {name} decides: {p['send']} send, {p['holdout']} holdout, "
            f"{p['skipped']} skipped (what is already written for today stays as it is)"
        )
        for tier, arms in p["by_tier_arm"].items():
            for arm, c in arms.items():
                lines.append(
                    f"    {tier:<14} {arm:<28} send {c['send']:>6}  holdout {c['holdout']:>5}"
                )
        for s in p.get("sample", []):
            who = "holdout" if s["holdout"] else s["channel"]
            lines.append(
                f"    e.g. {s['user']} ({s['tier']}): {s['arm']} step {s['step']} via {who} "
                f"at {s['send_at']}" + (f" with {s['coupon']}" if s["coupon"] else "")
            )
    return "\n".join(lines)
