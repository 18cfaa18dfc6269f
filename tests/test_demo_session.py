"""`make demo`'s scripted session runs through and shows what it says it shows: a resent
redemption answered once, another order refused. (It broke unseen once: nothing ran it.)"""

from __future__ import annotations


def test_the_demo_session_runs_and_shows_the_refusals(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    result = runner.invoke(args=["demo-session"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "resend that redemption (an answer lost on the way): HTTP 200" in result.output
    assert "redeemed once" in result.output
    assert "redeem it on another order: HTTP 409 already_redeemed" in result.output
