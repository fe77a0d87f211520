"""What a saga is made of: its steps, their compensations and limits.

A definition has a name and a version, both recorded on every ``SagaRun``, so
a saga started under one definition can be told apart after the steps change.
"""

from collections.abc import Callable
from dataclasses import dataclass, field


class StepFailed(Exception):
    """A business failure: retrying will not help (declined card, out of stock).

    ``reason`` is safe to show the customer; the exception text is for operators.
    """

    def __init__(self, reason, detail=""):
        self.reason = reason
        super().__init__(detail or reason)


@dataclass(frozen=True)
class Step:
    name: str
    action: Callable  # (order, idempotency_key) -> dict
    compensation: str
    compensate: Callable  # (order, idempotency_key of the step) -> dict
    advance: str  # the Order transition to call when the step succeeded
    # Runs in the recording transaction with the action's result; returns the step's result.
    # External steps record what the other system answered here, so it commits with the step;
    # writes nobody reads back go into ``batch`` (a ``config.sql.Batch``), sent with the record.
    record: Callable = field(default=lambda order, key, result, batch: result)
    time_limit: int = 30  # seconds; the task's soft time limit
    local: bool = False  # the action only writes our database: run it in the recording transaction (it must be atomic)


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    version: int
    steps: tuple[Step, ...]

    def step(self, name) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def compensation(self, name) -> Step:
        """The forward step that the compensation ``name`` undoes."""
        for step in self.steps:
            if step.compensation == name:
                return step
        raise KeyError(name)
