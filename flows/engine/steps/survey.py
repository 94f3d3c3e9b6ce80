"""``survey``: an NPS, CSAT or CES question to each selected contact, by email, with a signed link."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.analytics.surveys import survey_link_for
from flows.engine.render import markdown_to_html, render_value
from flows.engine.steps._base import Handler, then_next
from flows.engine.steps._message import CHANNEL, addressed_to, chosen_contacts, send
from models.playbook import SurveyStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER", "QUESTIONS"]

QUESTIONS = {
    "nps": "How likely are you to recommend us to a friend or colleague? (0 = not at all, 10 = extremely likely)",
    "csat": "How satisfied are you with our service? (1 = very unsatisfied, 5 = very satisfied)",
    "ces": "How easy was it to get what you needed from us? (1 = very difficult, 7 = very easy)",
}


def _survey(wake: Wake, step: SurveyStep, visit: int) -> None:
    for contact in chosen_contacts(wake, step):
        # the signed link carries the touch key, so an answer finds its touch (and marks it replied)
        link = survey_link_for(wake.touch_key(step.id, visit, contact))
        variables = wake.variables(step.id, contact, extra={"survey_url": link})
        question = render_value(step.question, variables) if step.question else QUESTIONS[step.survey]
        subject = render_value(step.subject, variables) if step.subject else "A quick question from your account team"
        text = f"{question}\n\n{link}\n"
        payload = {
            "kind": "survey",
            "survey": step.survey,
            "to": addressed_to(wake, contact),
            "subject": subject,
            "text": text,
            "question": question,
            "survey_url": link,
            "html": markdown_to_html(text),
        }
        send(wake, step.id, visit, payload, contact)


HANDLER = Handler(SurveyStep, then_next(_survey), channels=(CHANNEL,))
