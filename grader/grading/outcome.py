"""What a tier learns when the student's code does not do its part: deadlines, failures, and the stop."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..sandbox.limits import Limits
from ..sandbox.protocol import Raised, Reply


class Deadline:
    """A point in time all of one tier's requests must finish by."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def __float__(self) -> float:
        return self.end

    def extend(self, seconds: float) -> None:
        """Give back time the grader spent on its own business."""
        self.end += seconds


@dataclass(frozen=True)
class Failure:
    """Why something a tier needed from the student's code did not happen, in words for the student."""

    kind: str  # raised | timeout | crashed | protocol | error | skipped
    text: str
    raised: Raised | None = None


class Stop(Exception):
    """Raised inside a tier when the student's code failed in a way that ends the tier."""

    def __init__(self, failure: Failure):
        super().__init__(failure.text)
        self.failure = failure


def failure_of(reply: Reply, what: str, limits: Limits) -> Failure:
    """A non-ok reply as a Failure naming ``what`` was running."""
    if reply.status == "raised":
        return Failure("raised", reply.raised.summary(), reply.raised)
    if reply.status == "timeout":
        where = f"; it was at {reply.where}" if reply.where else ""
        return Failure(
            "timeout",
            f"{what} did not finish within {limits.timeout:g} s{where}. Look for an endless "
            "loop or very slow code; printing large arrays also takes long.",
        )
    if reply.status == "crashed":
        where = f" ({reply.where})" if reply.where else ""
        return Failure("crashed", f"While running {what}, {reply.detail}{where}.")
    if reply.status == "protocol":
        return Failure(
            "protocol",
            f"While running {what}, the student process sent a reply the grader cannot "
            f"accept ({reply.detail}); nothing of it counts.",
        )
    return Failure("error", f"While running {what}, the grader's agent failed ({reply.detail}).")
