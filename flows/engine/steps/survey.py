"""``survey``: an NPS, CSAT or CES question to each selected contact, by email, with a signed link."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

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
from models.playbook import SurveyStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["ENDS", "HANDLER", "QUESTIONS", "score_buttons"]

QUESTIONS = {
    "nps": "How likely are you to recommend us to a friend or colleague? (0 = not at all, 10 = extremely likely)",
    "csat": "How satisfied are you with our service? (1 = very unsatisfied, 5 = very satisfied)",
    "ces": "How easy was it to get what you needed from us? (1 = very difficult, 7 = very easy)",
}


#: the words at either end of the scale
ENDS = {
    "nps": ("Not at all likely", "Extremely likely"),
    "csat": ("Very unsatisfied", "Very satisfied"),
    "ces": ("Very difficult", "Very easy"),
}
_BUTTON = (
    "display:inline-block;min-width:30px;padding:9px 4px;border:1px solid #1d4ed8;border-radius:4px;"
    "text-align:center;color:#1d4ed8;text-decoration:none;font:bold 16px sans-serif"
)


def score_buttons(kind: str, link: str) -> str:
    """A row of score buttons for an email: each a link to the survey page with its score (one
    click answers), in a table, which every email program lays out."""
    from flows.analytics.surveys import KINDS  # see _survey

    low, high = KINDS[kind]
    cells = "".join(
        f'<td style="padding:2px"><a href="{escape(link)}&amp;score={n}" style="{_BUTTON}" '
        f'aria-label="{n}">{n}</a></td>'
        for n in range(low, high + 1)
    )
    left, right = ENDS[kind]
    return (
        f'<table role="presentation" cellspacing="0" cellpadding="0" style="border-collapse:collapse"><tr>{cells}'
        f'</tr></table>\n<p style="font-size:13px;color:#555">{low} = {escape(left)}, {high} = {escape(right)}</p>\n'
    )


def _survey(wake: Wake, step: SurveyStep, visit: int) -> None:
    # imported by a survey that sends, not by the engine: importing it loads every importer of
    # integrations.sources, which a play or tick without a survey never uses
    from flows.analytics.surveys import survey_link_for

    for contact in chosen_contacts(wake, step):
        # the signed link carries the touch key, so an answer finds its touch (and marks it replied)
        link = survey_link_for(wake.touch_key(step.id, visit, contact), wake.as_of)
        leave = unsubscribe_link(wake, contact, "survey")
        variables = wake.variables(step.id, contact, extra={"survey_url": link, "unsubscribe_url": leave})
        question = render_value(step.question, variables) if step.question else QUESTIONS[step.survey]
        subject = render_value(step.subject, variables) if step.subject else "A quick question from your account team"
        text = f"{question}\n\n{link}\n"
        html = (
            markdown_to_html(question)
            + score_buttons(step.survey, link)
            + f'<p><a href="{escape(link)}">Open the survey</a></p>\n'
        )
        payload = {
            "kind": "survey",
            "survey": step.survey,
            "to": addressed_to(wake, contact),
            "subject": subject,
            "text": text,
            "question": question,
            "survey_url": link,
            "html": html,
        }
        send(wake, step, visit, with_unsubscribe_footer(payload, leave), contact)


HANDLER = Handler(SurveyStep, then_next(_survey), channels=(CHANNEL,))
