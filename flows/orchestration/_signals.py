"""Stopping Prefect runs cleanly: Ctrl-C and SIGTERM end a run Cancelled, not Crashed.

- A flow run interrupted in this process (``retain run`` through Prefect, Ctrl-C or SIGTERM) is
  marked Cancelled by :func:`cancelled_when_interrupted`, an ``on_crashed`` hook.
- A flow run that ``retain serve`` started is a child process: serve stops it through Prefect
  (which marks it Cancelled) when serve itself is stopped. The terminal's Ctrl-C reaches the
  child too; the child leaves it to serve (:func:`leave_ctrl_c_to_the_runner`) instead of dying
  with a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled

__all__ = ["STOPPED", "cancelled_when_interrupted", "leave_ctrl_c_to_the_runner"]

STOPPED = "stopped by Ctrl-C or SIGTERM"


def cancelled_when_interrupted(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_crashed`` hook: a run that crashed because it was interrupted was cancelled by a person."""
    interrupted = sys.exc_info()[1]
    if not isinstance(interrupted, KeyboardInterrupt | TerminationSignal):
        return  # a real crash stays Crashed
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Cancelled(message=STOPPED), force=True)


def leave_ctrl_c_to_the_runner() -> None:
    """In a flow run process started by a runner (``retain serve``), ignore SIGINT: the runner
    cancels its runs through Prefect when it stops."""
    if os.environ.get("PREFECT__FLOW_RUN_ID"):
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change
            signal.signal(signal.SIGINT, signal.SIG_IGN)
