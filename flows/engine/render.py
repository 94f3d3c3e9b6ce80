"""What templates see when a touch is written, and the rendering of each step's message."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt
from sqlmodel import SQLModel

from integrations.channels import SecretMarkers, seal
from models import Account, Contact, Enrollment, TemplateError, table_of
from playbooks import CompiledPlaybook, render

__all__ = ["markdown_to_html", "render_value", "template_variables"]

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


def _row(obj: SQLModel | None) -> dict[str, Any]:
    if obj is None:
        return {}
    return {c.name: getattr(obj, c.name) for c in table_of(obj).columns}


def _first_name(name: str | None, email: str | None) -> str:
    if name:
        return name.split()[0]
    return (email or "").split("@")[0].split(".")[0].capitalize()


def template_variables(
    pb: CompiledPlaybook,
    account: Account,
    *,
    now: datetime,
    enrollment: Enrollment | None = None,
    contact: Contact | None = None,
    step_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables of a message: plain data, never ORM objects (the sandbox sees values only)."""
    contact_vars = _row(contact)
    if contact is not None:
        contact_vars["first_name"] = _first_name(contact.name, contact.email)
    csm_name = account.csm_name or (account.csm_email or "").split("@")[0].replace(".", " ").title() or None
    enrollment_vars = {k: v for k, v in _row(enrollment).items() if k not in ("state", "claimed_by", "claimed_until")}
    variables = {
        "account": _row(account),
        "contact": contact_vars,
        "csm": {"email": account.csm_email, "name": csm_name, "first_name": _first_name(csm_name, account.csm_email)},
        "enrollment": enrollment_vars,
        "playbook": {
            "id": pb.id,
            "name": pb.spec.name,
            "lifecycle": pb.spec.lifecycle,
            "revision": pb.revision,
            "description": pb.spec.description,
        },
        "secrets": SecretMarkers(),
        "now": now,
        "step": {"id": step_id},
        "unsubscribe_url": "",
        "survey_url": "",
    }
    variables.update(extra or {})
    return variables


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render a template string, or every string inside a mapping or list. Output that refers to
    a secret becomes sealed text (see ``integrations.channels.secrets``): only the author's
    ``{{ secrets.<name> }}`` can make one, never the customer data printed beside it."""
    if isinstance(value, str):
        text = render(value, variables)
        markers = variables.get("secrets")
        return seal(text, markers) if isinstance(markers, SecretMarkers) else text
    if isinstance(value, dict):
        return {k: render_value(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, variables) for v in value]
    return value


def markdown_to_html(text: str) -> str:
    if not isinstance(text, str):  # sealed text: validation keeps secrets out of messages to people
        raise TemplateError("a message to a person cannot hold a secret")
    html: str = _markdown.render(text)
    return html
