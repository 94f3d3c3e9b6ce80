"""What email and survey steps share: who is written to, under which address, and why not."""

from __future__ import annotations

from email.utils import formataddr
from html import escape
from typing import TYPE_CHECKING, Any

from flows.engine.policy import unsubscribe_reason
from models import Contact
from models.playbook import EmailStep, SurveyStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["CHANNEL", "addressed_to", "chosen_contacts", "send", "unsubscribe_link", "with_unsubscribe_footer"]

CHANNEL = "email"  # surveys go out by email too


def chosen_contacts(wake: Wake, step: EmailStep | SurveyStep) -> list[Contact | None]:
    """Who the step writes to; when no contact matches, the timeline says so."""
    chosen = _recipients(wake, step)
    if not chosen:
        wake.record(
            "skipped",
            f"{step.id}: no contact matches {step.contacts or wake.pb.spec.entry.contacts or 'primary contact'}",
            step.id,
        )
    return list(chosen)


def _recipients(wake: Wake, step: EmailStep | SurveyStep) -> list[Contact]:
    """The step's own ``contacts`` rule, else the playbook's ``entry.contacts``, else the primary
    contact."""
    if step.contacts is not None:
        expr = wake.pb.step_expression(step.id, "contacts")
    elif wake.pb.spec.entry.contacts is not None:
        expr = wake.pb.expression("entry", "contacts")
    else:
        primary = [c for c in wake.contacts if c.is_primary]
        return primary[:1] or wake.contacts[:1]
    return [c for c in wake.contacts if wake.holds(expr, c)]


def send(
    wake: Wake, step: EmailStep | SurveyStep, visit: int, payload: dict[str, Any], contact: Contact | None
) -> None:
    """Write the message as a touch, suppressed when the contact unsubscribed or has no address;
    a draft waiting for approval when the step says ``approve:``."""
    to = payload["to"]
    reason = unsubscribe_reason(contact, payload["kind"]) if contact is not None else None
    if reason is None and not to:
        reason = "no address (the account has no CSM email)" if contact is None else "contact has no email"
    wake.touch(step.id, visit, CHANNEL, payload, contact, suppressed=reason, approval=_approval(wake, step))


def _approval(wake: Wake, step: EmailStep | SurveyStep) -> dict[str, Any] | None:
    """The touch's approval columns: the approver (``csm``: the account's CSM), the deadline and
    what happens at it."""
    approval = step.approval
    if approval is None:
        return None
    approver = wake.account.csm_email if approval.by == "csm" else approval.by
    return {
        "approver": approver or "csm",  # an account without a CSM: any CSM may approve
        "approve_by": None if approval.deadline is None else wake.as_of + approval.deadline,
        "on_deadline": None if approval.deadline is None else approval.at_deadline,
    }


def addressed_to(wake: Wake, contact: Contact | None) -> str | None:
    """``"Dana Buyer <dana@acme.com>"``: people see their name, not a bare address. No contact:
    the account's CSM."""
    address = contact.email if contact else wake.account.csm_email
    name = contact.name if contact else wake.account.csm_name
    return formataddr((name, address)) if address and name else address


def unsubscribe_link(wake: Wake, contact: Contact | None, kind: str) -> str:
    """The signed link that unsubscribes ``contact`` from ``kind`` messages (``email``,
    ``survey``); "" for a message to the CSM (no contact: nobody to unsubscribe)."""
    if contact is None or contact.id is None:
        return ""
    return wake.writes.links.unsubscribe_link(kind, wake.as_of, contact_id=contact.id)


_FOOTER_TEXT = {"email": "Don't want these emails?", "survey": "Don't want these surveys?"}


def with_unsubscribe_footer(payload: dict[str, Any], link: str) -> dict[str, Any]:
    """``payload`` with its unsubscribe link: kept for the ``List-Unsubscribe`` header, and shown
    at the foot of the text and the HTML, unless the template already printed it."""
    if not link:
        return payload
    text, html = payload.get("text"), payload.get("html")
    words = _FOOTER_TEXT.get(str(payload.get("kind")), _FOOTER_TEXT["email"])
    footer: dict[str, Any] = {"unsubscribe_url": link}
    if isinstance(text, str) and link not in text:
        footer["text"] = f"{text.rstrip()}\n\n--\n{words} Unsubscribe: {link}\n"
    if isinstance(html, str) and escape(link) not in html and link not in html:
        footer["html"] = (
            f'{html}<hr><p style="font-size:13px;color:#555">{escape(words)} '
            f'<a href="{escape(link)}">Unsubscribe</a></p>\n'
        )
    return {**payload, **footer}
