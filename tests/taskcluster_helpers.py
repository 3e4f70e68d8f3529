"""Script builders shared by the Taskcluster tests."""

from __future__ import annotations

from typing import Any

from reactive_tasks import PollPolicy

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
UNKNOWN = "fN1SbArXTPSVFNUvaOlinQ"  # a valid slugid no emulated task has


def run(spec: str) -> dict[str, Any]:
    """``"running"`` or ``"exception:worker-shutdown"`` as an emulator run object."""
    state, _, reason = spec.partition(":")
    out: dict[str, Any] = {"state": state}
    if reason:
        out["reasonResolved"] = reason
    return out


def step(*runs: str, polls: int | None = 1) -> dict[str, Any]:
    """One scripted step: the task's whole run list at that point."""
    out: dict[str, Any] = {"runs": [run(r) for r in runs]}
    if polls is not None:
        out["polls"] = polls
    return out
