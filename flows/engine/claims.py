"""Who holds a claim, for how long, and whether its holder is known to be gone.

A delivery run leases the touches it works on (``Touch.lease_until``) and names itself in
``Touch.claimed_by``: ``host:pid`` (``;pidns=…`` the process's PID namespace, ``;started=…`` its
start time, ``;flow_run=…`` its Prefect flow run, each when known). A lease normally runs out
after ``RETAIN_LEASE_SECONDS`` (300 by default). When the holder ran on this host, in this PID
namespace, and its process no longer exists (or its pid now belongs to a newer process, or it is a
zombie), the claim is taken over at once: a re-run after a crash does not wait out the lease.

A holder's process on another host is never judged by its pid; when the holder was a Prefect flow
run, whoever orchestrates (the Prefect layer, ``flows.orchestration.claims``) may hand the engine a
:data:`RunsOver`: the flow runs it knows have ended (Crashed, Failed, Cancelled, Completed, or
unknown to the Prefect server every run reports to). Their claims are taken over at once too.
Otherwise the lease is waited out.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Collection, Iterable
from datetime import timedelta
from functools import cache
from pathlib import Path

from models import Settings

__all__ = ["DEFAULT_LEASE_SECONDS", "RunsOver", "claimer", "default_lease", "gone_holders", "is_gone"]

DEFAULT_LEASE_SECONDS = 300

#: Given Prefect flow run ids, those known to have ended (a run that may still run is not among them)
RunsOver = Callable[[Collection[str]], Collection[str]]

_log = logging.getLogger(__name__)


def default_lease() -> timedelta:
    """The lease of a claim: ``RETAIN_LEASE_SECONDS`` (at least as long as one send may take)."""
    return timedelta(seconds=Settings().lease_seconds)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from Linux's /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return (fields[0], fields[19]) if len(fields) > 19 else None


@cache
def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _flow_run_id() -> str | None:
    """The Prefect flow run this process runs in, without importing Prefect (only if it is loaded)."""
    if run := os.environ.get("PREFECT__FLOW_RUN_ID"):
        return run
    context = sys.modules.get("prefect.context")
    if context is None:
        return None
    flow_run_context = context.FlowRunContext.get()
    flow_run = getattr(flow_run_context, "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


def claimer() -> str:
    """This process, as it signs its claims."""
    pid = os.getpid()
    parts = [_process(pid)]
    if run := _flow_run_id():
        parts.append(f"flow_run={run}")
    return ";".join(parts)[:200]


@cache
def _process(pid: int) -> str:
    """``host:pid;pidns=…;started=…`` of a process of ours: read once (the outbox signs every
    wave of touches), by pid, so that a forked child reads its own."""
    parts = [f"{socket.gethostname()}:{pid}"]
    if namespace := _pid_namespace():
        parts.append(f"pidns={namespace}")
    if stat := _proc_stat(pid):
        parts.append(f"started={stat[1]}")
    return ";".join(parts)


def is_gone(holder: str | None) -> bool:
    """True only when ``holder`` (a :func:`claimer`) is known to have stopped: a process of this
    host and PID namespace that no longer runs, is a zombie, or whose pid a newer process has."""
    if not holder:
        return False
    first, *rest = holder.split(";")
    host, _, pid_text = first.rpartition(":")
    fields = dict(part.partition("=")[::2] for part in rest)
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if fields.get("pidns") != _pid_namespace():
        return False  # another container on a host of the same name: its processes are not ours to see
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it runs, as another user
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    return state in ("Z", "X") or ("started" in fields and fields["started"] != started)


def _flow_run_of(holder: str) -> str | None:
    for part in holder.split(";")[1:]:
        name, _, value = part.partition("=")
        if name == "flow_run" and value:
            return value
    return None


def gone_holders(holders: Iterable[str], runs_over: RunsOver | None = None) -> list[str]:
    """The holders among ``holders`` known to have stopped: by their process (:func:`is_gone`), or,
    asked once for the whole lot, by their Prefect flow run (``runs_over``). A failing question is
    logged and taken as "not known": those leases are waited out."""
    holders = sorted(set(holders))
    gone = [h for h in holders if is_gone(h)]
    if runs_over is None:
        return gone
    mine = _flow_run_id()
    by_run = {h: run for h in holders if h not in gone and (run := _flow_run_of(h)) and run != mine}
    if not by_run:
        return gone
    try:
        over = set(runs_over(sorted(set(by_run.values()))))
    except Exception as exc:  # a Prefect server that does not answer must not stop a delivery
        _log.warning(
            "could not ask whether the flow runs holding claims have ended (%s): waiting out their leases", exc
        )
        return gone
    return sorted(gone + [h for h, run in by_run.items() if run in over])
