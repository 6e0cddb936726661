"""A discrete-event simulator that replays arrival traces through the real policies and planner.

`python -m scaler.sim` compares the policies on the same traces; see scaler.sim.model for what is
modelled (boot times, batched service, the scaler's tick, the warm pool).
"""
