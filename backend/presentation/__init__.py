"""How figures read to people: number formats for the terminal and the pages (`display`),
and the chart figures the dashboard and the simulator's HTML report both draw (`charts`).

Kept out of the decision core (it decides nothing) and out of the web layer (the simulator's
fast path renders with it and must not load Flask). Imports nothing of ours.
"""
