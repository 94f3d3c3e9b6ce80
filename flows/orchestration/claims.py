"""The engine's question "has the flow run holding these claims ended?", answered by Prefect.

A delivery run signs its claims with its Prefect flow run (``flows.engine.claims``). When such a
run crashed, failed, was cancelled or completed, its claims are dead whatever its lease says:
:func:`flow_runs_over` tells the engine so, and the Prefect flows hand it to every delivery
(:func:`with_prefect_claims`). A run the configured Prefect server does not know is over too (it
was deleted, or never reported there); with no server configured (Prefect's temporary server of
one ``PREFECT_HOME``) an unknown run is not judged: it may belong to another home's server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from uuid import UUID

from flows.engine.outbox import DeliveryPolicy

__all__ = ["flow_runs_over", "with_prefect_claims"]


def flow_runs_over(flow_run_ids: Collection[str]) -> set[str]:
    """Of ``flow_run_ids``, those Prefect reports ended (a final state), or does not know while a
    Prefect server is configured. Raises when Prefect cannot be asked (the engine then waits)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL

    wanted: dict[UUID, str] = {}
    for run in flow_run_ids:
        try:
            wanted[UUID(run)] = run
        except ValueError:
            continue  # not a flow run id: nothing Prefect can say about it
    if not wanted:
        return set()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(wanted))), limit=len(wanted)
        )
    found = {run.id: run for run in runs}
    over = {wanted[i] for i, run in found.items() if i in wanted and run.state is not None and run.state.is_final()}
    if PREFECT_API_URL.value():
        over |= {text for i, text in wanted.items() if i not in found}
    return over


def with_prefect_claims(policy: DeliveryPolicy) -> DeliveryPolicy:
    """``policy``, asking Prefect which flow runs holding claims have ended."""
    return dataclasses.replace(policy, runs_over=flow_runs_over)
