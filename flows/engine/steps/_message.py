"""What email and survey steps share: who is written to, under which address, and why not."""

from __future__ import annotations

from email.utils import formataddr
from typing import TYPE_CHECKING, Any

from flows.engine.policy import unsubscribe_reason
from models import Contact
from models.playbook import EmailStep, SurveyStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["CHANNEL", "addressed_to", "chosen_contacts", "send"]

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


def send(wake: Wake, step_id: str, visit: int, payload: dict[str, Any], contact: Contact | None) -> None:
    """Write the message as a touch, suppressed when the contact unsubscribed or has no address."""
    to = payload["to"]
    reason = unsubscribe_reason(contact, payload["kind"]) if contact is not None else None
    if reason is None and not to:
        reason = "no address (the account has no CSM email)" if contact is None else "contact has no email"
    wake.touch(step_id, visit, CHANNEL, payload, contact, suppressed=reason)


def addressed_to(wake: Wake, contact: Contact | None) -> str | None:
    """``"Dana Buyer <dana@acme.com>"``: people see their name, not a bare address. No contact:
    the account's CSM."""
    address = contact.email if contact else wake.account.csm_email
    name = contact.name if contact else wake.account.csm_name
    return formataddr((name, address)) if address and name else address
