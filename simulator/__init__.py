"""The simulated campus (Mesa): synthetic students whose engagement decays (docs/simulator.md)."""
