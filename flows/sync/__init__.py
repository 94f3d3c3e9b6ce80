"""Sync: the team's systems into Retain's tables, incrementally, on a schedule.

:func:`sync_sources` runs the Stripe connector and the SQL sources of ``sources.yaml`` (one, or all:
Stripe first, then the SQL sources in kind order, accounts before what names them); the Prefect
flow in :mod:`flows.orchestration.sync` calls it.
"""

from flows.sync._run import source_names, sync_sources
from flows.sync._sql import SyncResult, sync_source
from flows.sync._stripe import STRIPE, sync_stripe

__all__ = ["STRIPE", "SyncResult", "source_names", "sync_source", "sync_sources", "sync_stripe"]
