"""The one percentile every report uses (web /status, the simulator, the load generator)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The nearest-rank p-th percentile (0 < p <= 100) of an ascending sequence: a value that
    was actually observed, never an interpolation. None for an empty sequence: nothing observed
    has no percentile, and each caller shows that its own way (null in JSON, 0 in a table)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
