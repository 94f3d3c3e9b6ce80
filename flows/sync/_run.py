"""``retain sync``: the Stripe connector and the SQL sources, one or all."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.engine import Engine

from flows.sync._sql import SyncResult, sync_source
from flows.sync._stripe import STRIPE, sync_stripe
from integrations.channels.secrets import resolve_secret
from models import NotFoundError
from models.sources import SOURCE_KINDS, SourcesSpec

__all__ = ["source_names", "sync_sources"]


def source_names(spec: SourcesSpec) -> list[str]:
    """Every source in the order ``retain sync`` runs them: Stripe (it makes accounts), then the SQL
    sources in kind order (accounts before what names them)."""
    sql = sorted(spec.sources, key=lambda n: (SOURCE_KINDS.index(spec.sources[n].kind), n))
    return [STRIPE, *sql] if spec.stripe is not None else sql


def sync_sources(
    engine: Engine,
    spec: SourcesSpec,
    *,
    now: datetime,
    only: str | None = None,
    lookup: Callable[[str], str] = resolve_secret,
    declared: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> list[SyncResult]:
    """Run source ``only``, or every source (see :func:`source_names`). ``declared``: the custom
    fields the playbooks declare, checked in an accounts source's rows as an accounts import does."""
    names = source_names(spec)
    if only is not None and only not in names:
        known = ", ".join(names) or "none: declare them in sources.yaml"
        raise NotFoundError(f"no source {only!r} in sources.yaml; sources: {known}")
    results = []
    for name in [only] if only is not None else names:
        if name == STRIPE and spec.stripe is not None:
            results.append(sync_stripe(engine, spec.stripe, now=now, lookup=lookup))
        else:
            source = spec.sources[name]
            results.append(
                sync_source(
                    engine, name, source, now=now, activation=spec.activation_event, lookup=lookup, declared=declared
                )
            )
    return results
