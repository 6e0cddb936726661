"""`python -m bench`: the service measured against its physical limit, the bare model.

Every number comes from one run on one machine, so the ratios (worker / model, end to end /
model) mean something even when the machine is shared and the absolute numbers are noisy.
"""
