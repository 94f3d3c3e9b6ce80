"""Secrets: resolved at send time, never rendered into stored touches, logs or errors.

Templates see ``secrets.<name>``. While a touch is written it renders as a marker
(``⟦secret:name⟧``); the marker is replaced by the value only in the request that leaves the
machine. Values come from the environment (``RETAIN_SECRET_<NAME>``) or, failing that, from a
Prefect Secret block named ``retain-<name>`` (with ``-`` for ``_``).
"""

from __future__ import annotations

import os
import re
from typing import Any, cast

from models import ConfigError

__all__ = ["SecretMarkers", "resolve_secret", "resolve_secrets", "secret_names"]

_MARKER = re.compile(r"⟦secret:([A-Za-z_][A-Za-z0-9_]*)⟧")


class SecretMarkers:
    """The ``secrets`` template variable while touches are written: each attribute is a marker."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return f"⟦secret:{name}⟧"

    def __getitem__(self, name: str) -> str:
        return self.__getattr__(name)


def resolve_secret(name: str) -> str:
    """The value of secret ``name``; a :class:`ConfigError` names where it was looked for."""
    env_name = f"RETAIN_SECRET_{name.upper()}"
    value = os.environ.get(env_name)
    if value:
        return value
    block = f"retain-{name.replace('_', '-')}"
    try:
        from prefect.blocks.system import Secret

        loaded = cast(Secret, Secret.load(block, _sync=True))  # type: ignore[call-arg]
        return str(loaded.get())
    except Exception:  # no Prefect API, no such block: report both places below
        pass
    raise ConfigError(f"secret {name!r} is not set: set {env_name} or create the Prefect Secret block {block!r}")


def _prefect_server_configured() -> bool:
    """Blocks live on a Prefect server; without one configured, looking would start a temporary
    server just to find nothing."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def secret_names(value: Any) -> set[str]:
    """The secrets a rendered payload refers to."""
    if isinstance(value, str):
        return set(_MARKER.findall(value))
    if isinstance(value, dict):
        return set().union(*(secret_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(secret_names(v) for v in value)) if value else set()
    return set()


def resolve_secrets(value: Any, lookup: Any = resolve_secret) -> Any:
    """A copy of ``value`` with every marker replaced by its secret."""
    if isinstance(value, str):
        return _MARKER.sub(lambda m: lookup(m.group(1)), value)
    if isinstance(value, dict):
        return {k: resolve_secrets(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, lookup) for v in value]
    return value
