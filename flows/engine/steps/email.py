"""``email``: one email per selected contact (or to the CSM)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows.engine.render import markdown_to_html, render_value
from flows.engine.steps._base import Handler, then_next
from flows.engine.steps._message import (
    CHANNEL,
    addressed_to,
    chosen_contacts,
    send,
    unsubscribe_link,
    with_unsubscribe_footer,
)
from models import Contact
from models.playbook import EmailStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _email(wake: Wake, step: EmailStep, visit: int) -> None:
    targets: list[Contact | None] = [None] if step.to == "csm" else chosen_contacts(wake, step)
    for contact in targets:
        link = unsubscribe_link(wake, contact, "email")
        variables = wake.variables(step.id, contact, extra={"unsubscribe_url": link})
        body_source = wake.pb.templates[step.template] if step.template else step.body
        text = render_value(body_source, variables)
        payload: dict[str, Any] = {
            "kind": "email",
            "to": addressed_to(wake, contact),
            "subject": render_value(step.subject, variables),
            "text": text,
            "html": markdown_to_html(text),
        }
        if step.cc_csm and wake.account.csm_email:
            payload["cc"] = wake.account.csm_email
        send(wake, step, visit, with_unsubscribe_footer(payload, link), contact)


HANDLER = Handler(EmailStep, then_next(_email), channels=(CHANNEL,))
