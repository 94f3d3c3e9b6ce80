"""Who is acting: one identity for every manual action (a play, a task change, an approval, an
outbox decision), recorded with what the person did.

``--as NAME`` (``--by`` is the same option), else ``RETAIN_CSM``, else the operating system's user.
A CSM's tasks are assigned to the account's ``csm_email``, so set ``RETAIN_CSM`` to that address
to see your own with ``retain tasks list`` and ``retain today``.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

__all__ = ["AsCsm", "csm_identity"]

AsCsm = Annotated[
    str | None,
    typer.Option(
        "--as",
        "--by",
        envvar="RETAIN_CSM",
        help="Who does this, for the record (the CSM's email). Default: RETAIN_CSM, else the system user.",
        show_default=False,
    ),
]


def csm_identity(given: str | None) -> str:
    """The person acting: ``given`` (``--as``/``RETAIN_CSM``), else the operating system's user."""
    if given and given.strip():
        return given.strip()
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no user name: a container with an unnamed uid
        who = ""
    if not who:
        raise typer.BadParameter("say who you are: --as NAME (or set RETAIN_CSM)", param_hint="--as")
    return who
