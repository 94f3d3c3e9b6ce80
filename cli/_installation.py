"""Retain installs five top-level packages with plain names: ``models``, ``playbooks``,
``integrations``, ``flows`` and ``cli``. Another project's package of the same name earlier on the
import path (``PYTHONPATH``, the current folder of ``python -m``, or another distribution in the
same environment) would be imported instead of Retain's and fail in a strange way; this check
names it before anything else is imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["PACKAGES", "installation_problem"]

PACKAGES = ("models", "playbooks", "integrations", "flows", "cli")

_ADVICE = (
    "Install Retain in a virtual environment of its own (python3 -m venv; or pipx install), "
    "and run it where no other '{name}' package is on PYTHONPATH."
)


def installation_problem(home: Path | None = None) -> str | None:
    """What is wrong when the five packages do not come from one installation (``home``: the folder
    that holds them, by default the one this ``cli`` package is in); ``None`` when all is well."""
    home = (home or Path(__file__).resolve().parent.parent).resolve()
    for name in PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:  # a broken module of that name, or one without a spec
            return f"Retain's package {name!r} cannot be found: {exc}. {_ADVICE.format(name=name)}"
        if spec is None or spec.origin is None:
            return f"Retain's package {name!r} is missing from {home}: reinstall Retain. {_ADVICE.format(name=name)}"
        origin = Path(spec.origin).resolve()
        if origin.parent.parent != home:
            return (
                f"the package {name!r} found first is {origin.parent}, not Retain's own ({home / name}): "
                f"another project's {name!r} comes before Retain's on the import path. {_ADVICE.format(name=name)}"
            )
    return None
