"""The one interface every local runner implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InstanceView:
    """What a runner needs to know of one fleet instance."""

    instance_id: str
    state: str  # EC2 state name: pending, running, stopping, stopped, shutting-down, terminated
    launched_at: float = 0.0  # epoch seconds of this start (LaunchTime), for emulated boot delays
    restarted: bool = False  # True when this run is a start from stopped, not a new launch


class Runner(Protocol):
    def reconcile(self, instances: list[InstanceView]) -> None:
        """Make exactly one worker run per running instance; SIGTERM (drain) the others."""

    def close(self) -> None:
        """Drain and stop every worker this runner started."""
