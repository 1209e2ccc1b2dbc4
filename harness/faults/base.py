"""What a fault is: something wrong done to a lab from outside the amphora (engine operations, the
host's bridges, tc in the data-plane namespace) or to its processes — never through the agent —
and its undoing. Every fault has a heal."""

from __future__ import annotations

import abc


class FaultError(RuntimeError):
    """A fault could not be applied or healed; the message says why."""


class FaultUnsupported(FaultError):
    """This host cannot produce the fault (e.g. its kernel lacks sch_netem)."""


class Fault(abc.ABC):
    """Something wrong done to a lab, and its undoing."""

    description: str

    @abc.abstractmethod
    def apply(self) -> None: ...

    @abc.abstractmethod
    def heal(self) -> None: ...

    def __str__(self) -> str:
        return self.description
