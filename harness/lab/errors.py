"""The lab's error: what a lab cannot do (no free address block, a node that does not boot)."""


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says what and why."""
