"""The simulated campus (Mesa); built in its own issue."""
