"""Sync: the team's systems into Retain's tables, incrementally, on a schedule.

:func:`sync_sources` runs the SQL sources of ``sources.yaml`` (one, or all in kind order:
accounts before what names them); the Prefect flow in :mod:`flows.orchestration.sync` calls it.
"""

from flows.sync._sql import SyncResult, sync_source, sync_sources

__all__ = ["SyncResult", "sync_source", "sync_sources"]
