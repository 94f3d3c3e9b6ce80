"""The typed playbook definition: what a YAML playbook means, checked field by field.

Models are pydantic v2, frozen, and refuse unknown keys. Step kinds are a union discriminated on
``kind``. Fields that hold an expression or a template carry an :class:`ExprField` or
:class:`TemplateField` marker in their metadata, so the compiler can find and check every one of
them without a list kept by hand.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from dataclasses import dataclass
from datetime import time, timedelta
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, get_args

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from ._duration import DURATION_PATTERN, format_duration, parse_duration

__all__ = [
    "LIFECYCLES",
    "STEP_KINDS",
    "STEP_MODELS",
    "UPDATABLE_ACCOUNT_FIELDS",
    "WAITING_KINDS",
    "ApprovableStep",
    "Approval",
    "BranchStep",
    "EmailStep",
    "Entry",
    "EventTrigger",
    "ExitStep",
    "ExprField",
    "Goal",
    "OutcomeStep",
    "PlaybookSpec",
    "PolicySpec",
    "Schedule",
    "SlackStep",
    "Step",
    "StepBase",
    "SurveyStep",
    "TaskStep",
    "TemplateField",
    "UpdateStep",
    "WaitForStep",
    "WaitStep",
    "WebhookStep",
    "json_schema",
    "parse_max_touches",
    "parse_quiet_hours",
    "reentry_after",
    "step_problems",
]


# --- markers read by the compiler -------------------------------------------------------------


@dataclass(frozen=True)
class ExprField:
    """This string is an expression. ``scope``: audience | contacts | enrollment; ``expect``: bool | date."""

    scope: str
    expect: str = "bool"


@dataclass(frozen=True)
class TemplateField:
    """This string (or every string inside this mapping) is a Jinja template."""


AudienceExpr = Annotated[str, ExprField("audience")]
ContactsExpr = Annotated[str, ExprField("contacts")]
Condition = Annotated[str, ExprField("enrollment")]
DateExpr = Annotated[str, ExprField("enrollment", expect="date")]
EventExpr = Annotated[str, ExprField("event")]
#: what a custom field or an event property is declared as
DeclaredType = Literal["text", "number", "bool"]
Template = Annotated[str, TemplateField()]
TemplateJson = Annotated[dict[str, Any], TemplateField()]


# --- scalar types with their own grammar -------------------------------------------------------

_ID = re.compile(r"^[a-z][a-z0-9_]*$")


def _identifier(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{value!r} is not a valid id: use lowercase letters, digits and '_', starting with a letter")
    return value


Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": _ID.pattern, "maxLength": 100}),
]

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["3 days", "2 weeks", "P3D"]}),
]

_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")


def _percentage(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    m = _PERCENT.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a percentage like '10%', got {value!r}")
    pct = float(m.group(1))
    if not 0 <= pct <= 100:
        raise ValueError(f"percentage out of range: {value!r} (must be between 0% and 100%)")
    return pct / 100


Percentage = Annotated[
    float,
    BeforeValidator(_percentage),
    PlainSerializer(lambda v: f"{v * 100:g}%", return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "examples": ["10%"]}),
]


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str) -> str:
    if value not in _zones():
        close = difflib.get_close_matches(value, _zones(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown time zone {value!r}{hint}: use an IANA name like 'America/New_York'")
    return value


TimeZone = Annotated[str, AfterValidator(_timezone)]


def _cron(value: str) -> str:
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(
            f"bad cron expression {value!r}: use five fields, minute hour day month weekday, like '0 9 * * 1-5'"
        )
    return value


Cron = Annotated[str, AfterValidator(_cron)]

_REENTRY = re.compile(r"^after\s+(.+)$")


def _reentry(value: str) -> str:
    if value in ("never", "always"):
        return value
    m = _REENTRY.match(value.strip())
    if not m:
        raise ValueError(
            f"bad re-entry rule {value!r}: use 'never', 'always' or 'after <duration>' like 'after 300 days'"
        )
    try:
        parse_duration(m.group(1))
    except ValueError as exc:
        raise ValueError(f"bad re-entry rule {value!r}: {exc}") from None
    return value


Reentry = Annotated[
    str,
    AfterValidator(_reentry),
    WithJsonSchema(
        {"type": "string", "pattern": r"^(never|always|after\s+.+)$", "examples": ["never", "after 300 days"]}
    ),
]


def reentry_after(rule: str) -> timedelta | None:
    """How long after the start of its previous enrollment an account may enter again (never while
    one is active); ``None``: never again."""
    if rule == "never":
        return None
    if rule == "always":
        return timedelta(0)
    m = _REENTRY.match(rule.strip())
    assert m is not None, rule
    return parse_duration(m.group(1))


_HHMM = r"([01]\d|2[0-3]):([0-5]\d)"
_QUIET = re.compile(rf"^\s*{_HHMM}\s*-\s*{_HHMM}\s*$")


def parse_quiet_hours(value: str) -> tuple[time, time]:
    """``"20:00-08:00"`` -> (20:00, 08:00). The window may wrap past midnight."""
    m = _QUIET.match(value)
    if not m:
        raise ValueError(f"bad quiet hours {value!r}: use 'HH:MM-HH:MM' like '20:00-08:00'")
    start, end = time(int(m.group(1)), int(m.group(2))), time(int(m.group(3)), int(m.group(4)))
    if start == end:
        raise ValueError(f"bad quiet hours {value!r}: start and end are the same")
    return start, end


_CAP = re.compile(r"^\s*(\d+)\s+per\s+(.+)$")


def parse_max_touches(value: str) -> tuple[int, timedelta]:
    """``"2 per 7 days"`` -> (2, 7 days)."""
    m = _CAP.match(value)
    if not m:
        raise ValueError(f"bad touch cap {value!r}: use '<count> per <duration>' like '2 per 7 days'")
    count = int(m.group(1))
    if count < 1:
        raise ValueError(f"bad touch cap {value!r}: the count must be at least 1")
    return count, parse_duration(m.group(2))


def _check(parser: Any) -> Any:
    def validate(value: str) -> str:
        parser(value)
        return value

    return AfterValidator(validate)


def _clock(value: str) -> str:
    if not re.fullmatch(_HHMM, value):
        raise ValueError(f"bad time of day {value!r}: use 'HH:MM' like '09:00'")
    return value


ClockTime = Annotated[str, AfterValidator(_clock)]


# --- the playbook --------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LIFECYCLES = ("onboarding", "check_in", "renewal", "win_back", "farewell", "custom")
#: fields an ``update`` step may set on an account (besides ``custom.<name>``)
UPDATABLE_ACCOUNT_FIELDS = ("lifecycle_stage", "segment", "health", "status", "plan")


class Schedule(_Strict):
    """When the playbook's deployment ticks."""

    cron: Cron
    timezone: TimeZone = "UTC"


class EventTrigger(_Strict):
    """A product event (a Segment ``track`` call of this name) for which ``when`` holds."""

    track: str = Field(min_length=1, max_length=200)
    when: EventExpr | None = None  # over event.name, event.occurred_at, event.properties.<declared>, account
    properties: dict[Identifier, DeclaredType] = {}  # the event's properties ``when`` reads, and their types
    #: events older than this are not read (a late import never enrolls anyone for last year's events)
    within: Duration = timedelta(days=7)


class Entry(_Strict):
    """Who enters and how often."""

    reentry: Reentry = "never"
    holdout: Percentage = 0.0
    contacts: ContactsExpr | None = None  # default: the account's primary contact
    #: enter on an event: each event enrolls at most once, at the next tick, if the account is
    #: also in the audience and the re-entry rule lets it in
    on_event: EventTrigger | None = None


class Goal(_Strict):
    """Success. Checked before every step and on every wake-up."""

    when: Condition
    within: Duration | None = None
    outcome: Identifier


class PolicySpec(_Strict):
    """Overrides of the global contact policy for this playbook's touches."""

    quiet_hours: Annotated[str, _check(parse_quiet_hours)] | None = None
    business_days_only: StrictBool | None = None
    holidays: StrictBool | None = None
    max_touches: Annotated[str, _check(parse_max_touches)] | None = None
    survey_fatigue: Duration | None = None


class StepBase(_Strict):
    """What every step has. A step kind is its model here (a member of :data:`Step`) plus its
    handler in ``flows.engine.steps``; the lists of kinds are derived from the union."""

    #: the enrollment stops here until a due time (a loop must pass through such a step)
    waits: ClassVar[bool] = False

    id: Identifier
    description: str | None = None

    def summary(self) -> str:
        """One line that says what the step does (the outline and the Mermaid chart show it)."""
        raise NotImplementedError(f"{type(self).__name__} does not say what it does")


#: who approves a draft: ``csm`` (the account's CSM) or an approver's email address
Approver = Annotated[str, Field(min_length=1, max_length=320, pattern=r"^(csm|[^@\s]+@[^@\s]+)$")]


class Approval(_Strict):
    """A person approves each drafted message before it goes out (``approve: csm`` for short).

    The message is rendered and checked against the contact policy, then waits as a draft that the
    outbox does not deliver until ``by`` approves it (``retain approvals``). At ``deadline`` after
    drafting, ``at_deadline`` decides: ``send`` it as drafted, ``skip`` it (the default) or
    ``escalate``: a high-priority task for the approver, while the draft goes on waiting."""

    by: Approver = "csm"
    deadline: Duration | None = None
    at_deadline: Literal["send", "skip", "escalate"] = "skip"

    @model_validator(mode="after")
    def _deadline_rules(self) -> Approval:
        if self.deadline is None and "at_deadline" in self.model_fields_set:
            raise ValueError("'at_deadline' needs a 'deadline' (e.g. deadline: 2 days)")
        return self


class ApprovableStep(StepBase):
    """A step that writes to customers: it may wait for a person's approval (``approve:``)."""

    approve: Approver | Approval | None = None

    @property
    def approval(self) -> Approval | None:
        """``approve`` as an :class:`Approval` (``approve: csm`` is ``{by: csm}``), or None."""
        return Approval(by=self.approve) if isinstance(self.approve, str) else self.approve

    def _approval_note(self) -> str:
        approval = self.approval
        return "" if approval is None else f" (approved by {approval.by})"


class EmailStep(ApprovableStep):
    """Sends an email to each selected contact (or the CSM)."""

    kind: Literal["email"]
    subject: Template
    template: str | None = None  # a file under the playbooks folder's templates/
    body: Template | None = None  # inline Markdown
    to: Literal["contacts", "csm"] = "contacts"
    contacts: ContactsExpr | None = None  # this step's recipients; default: the playbook's entry.contacts
    cc_csm: StrictBool = False

    def summary(self) -> str:
        return f"email {self.to}: {self.subject!r}{self._approval_note()}"

    @model_validator(mode="after")
    def _one_body(self) -> EmailStep:
        if (self.template is None) == (self.body is None):
            raise ValueError("an email needs exactly one of 'template' (a file) or 'body' (inline text)")
        return self


class SlackStep(StepBase):
    """Posts to a Slack channel, or to the account's CSM when no channel is given."""

    kind: Literal["slack"]
    channel: Template | None = None
    text: Template

    def summary(self) -> str:
        return f"slack {self.channel or 'to the CSM'}: {self.text!r}"


class WebhookStep(StepBase):
    """Calls any HTTP endpoint with a signed JSON body."""

    kind: Literal["webhook"]
    url: Template
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    payload: TemplateJson | None = Field(default=None, alias="json")
    headers: dict[str, Template] | None = None

    def summary(self) -> str:
        return f"webhook {self.method} {self.url}"


class TaskStep(StepBase):
    """Creates a task (a "CTA") for the account's CSM, optionally in the CRM too."""

    kind: Literal["task"]
    title: Template
    body: Template | None = None
    due_in: Duration = timedelta(days=3)
    priority: Literal["low", "normal", "high"] = "normal"
    assignee: Template | None = None  # default: the account's CSM
    crm: StrictBool = False
    #: stays open when the enrollment ends (else closed with the reason); by default only a task that
    #: hands off, the last step or one followed by an ``exit`` step, stays open: it is what the
    #: playbook leaves the CSM to do, and the enrollment ends as soon as it is written
    keep_open: StrictBool | None = Field(
        default=None,
        description=(
            "Keep the task open when its enrollment ends (else it is closed with the reason). Default: "
            "true for the last step or a task followed by an exit step (the playbook's hand-off to the "
            "CSM), false elsewhere."
        ),
    )

    def summary(self) -> str:
        return f"task for the CSM ({self.priority}, due in {format_duration(self.due_in)}): {self.title!r}"


class SurveyStep(ApprovableStep):
    """Sends an NPS, CSAT or CES survey to each selected contact."""

    kind: Literal["survey"]
    survey: Literal["nps", "csat", "ces"]
    contacts: ContactsExpr | None = None  # who is asked; default: the playbook's entry.contacts
    subject: Template | None = None
    question: Template | None = None

    def summary(self) -> str:
        return f"{self.survey.upper()} survey{self._approval_note()}"


class WaitStep(StepBase):
    """Waits for a duration or until a date; durable (a due time on the enrollment)."""

    kind: Literal["wait"]
    waits: ClassVar[bool] = True
    for_: Duration | None = Field(default=None, alias="for")
    until: DateExpr | None = None
    at: ClockTime | None = None  # local time of day (contact's, then account's, then the playbook's zone)

    def summary(self) -> str:
        what = f"for {format_duration(self.for_)}" if self.for_ else f"until {self.until}"
        return f"wait {what}" + (f" at {self.at}" if self.at else "")

    @model_validator(mode="after")
    def _one_of(self) -> WaitStep:
        if (self.for_ is None) == (self.until is None):
            raise ValueError("a wait needs exactly one of 'for' (a duration) or 'until' (a date expression)")
        return self


class WaitForStep(StepBase):
    """Waits until a condition holds, or an event arrives, at most ``timeout``; then goes on (or to ``on_timeout``)."""

    kind: Literal["wait_for"]
    waits: ClassVar[bool] = True
    condition: Condition | None = None
    event: EventTrigger | None = None  # an event of the account after the wait began
    timeout: Duration
    on_timeout: Identifier | None = None
    check_every: Duration = timedelta(hours=1)

    def summary(self) -> str:
        then = f", then {self.on_timeout}" if self.on_timeout else ""
        what = self.condition if self.condition is not None else f"event {self.event.track!r}" if self.event else ""
        return f"wait for {what} (at most {format_duration(self.timeout)}{then})"

    @model_validator(mode="after")
    def _one_of(self) -> WaitForStep:
        if (self.condition is None) == (self.event is None):
            raise ValueError("a wait_for needs exactly one of 'condition' (an expression) or 'event' (a track event)")
        return self


class BranchStep(StepBase):
    """Goes to ``then`` or ``else`` (step ids; omitted: the next step)."""

    kind: Literal["branch"]
    if_: Condition = Field(alias="if")
    then: Identifier | None = None
    else_: Identifier | None = Field(default=None, alias="else")

    def summary(self) -> str:
        return f"if {self.if_} then {self.then or 'next'} else {self.else_ or 'next'}"

    @model_validator(mode="after")
    def _has_target(self) -> BranchStep:
        if self.then is None and self.else_ is None:
            raise ValueError("a branch needs 'then' or 'else' (a step id)")
        return self


class UpdateStep(StepBase):
    """Sets account fields (``lifecycle_stage``, ``health``, ``custom.<name>``, …); recorded in the timeline."""

    kind: Literal["update"]
    set: dict[str, str | int | float | bool | None] = Field(min_length=1)

    def summary(self) -> str:
        return "update " + ", ".join(f"{k} = {v!r}" for k, v in self.set.items())

    @model_validator(mode="after")
    def _known_fields(self) -> UpdateStep:
        for name in self.set:
            if name.startswith("custom.") and _ID.match(name.removeprefix("custom.")):
                continue
            if name not in UPDATABLE_ACCOUNT_FIELDS:
                close = difflib.get_close_matches(name, UPDATABLE_ACCOUNT_FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"cannot set account field {name!r}{hint}: use one of {', '.join(UPDATABLE_ACCOUNT_FIELDS)} or custom.<name>"
                )
        return self


class OutcomeStep(StepBase):
    """Records an outcome (onboarded, renewed, expanded, won_back, …) for the reports."""

    kind: Literal["outcome"]
    outcome: Identifier
    note: Template | None = None

    def summary(self) -> str:
        return f"record outcome {self.outcome}"


class ExitStep(StepBase):
    """Ends the enrollment (completed), optionally recording an outcome."""

    kind: Literal["exit"]
    outcome: Identifier | None = None

    def summary(self) -> str:
        return "exit" + (f" with outcome {self.outcome}" if self.outcome else "")


Step = Annotated[
    EmailStep
    | SlackStep
    | WebhookStep
    | TaskStep
    | SurveyStep
    | WaitStep
    | WaitForStep
    | BranchStep
    | UpdateStep
    | OutcomeStep
    | ExitStep,
    Field(discriminator="kind"),
]


def _by_kind() -> dict[str, type[StepBase]]:
    """The union's members by their ``kind`` tag, in the union's order: the one list of step kinds."""
    union = get_args(Step)[0]
    return {get_args(model.model_fields["kind"].annotation)[0]: model for model in get_args(union)}


#: kind -> model, derived from :data:`Step` (add a kind there, nowhere else in this package)
STEP_MODELS: dict[str, type[StepBase]] = _by_kind()
STEP_KINDS = tuple(STEP_MODELS)
WAITING_KINDS = tuple(kind for kind, model in STEP_MODELS.items() if model.waits)


class PlaybookSpec(_Strict):
    """One playbook, as written in its YAML file."""

    playbook: Identifier
    name: str = Field(min_length=1)
    lifecycle: Literal["onboarding", "check_in", "renewal", "win_back", "farewell", "custom"]
    description: str = ""
    priority: int | None = Field(default=None, ge=0, le=100)
    schedule: Schedule | None = None
    #: the account's custom fields the expressions read (account.custom.<name>), and their types
    custom_fields: dict[Identifier, DeclaredType] = {}
    audience: AudienceExpr
    entry: Entry = Entry()
    goal: Goal | None = None
    exit_when: Condition | None = None
    policy: PolicySpec | None = None
    steps: list[Step] = Field(min_length=1)

    @property
    def effective_priority(self) -> int:
        """Who wins when a contact's touch cap binds: higher first. Default by lifecycle."""
        if self.priority is not None:
            return self.priority
        return {"renewal": 90, "onboarding": 80, "win_back": 70, "farewell": 60, "check_in": 40}.get(self.lifecycle, 50)

    def step(self, step_id: str) -> Any:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def successors(self, index: int) -> list[int]:
        """Indexes of the steps that may run right after step ``index`` (not through a wait's timeout)."""
        step = self.steps[index]
        ids = {s.id: i for i, s in enumerate(self.steps)}
        following = [index + 1] if index + 1 < len(self.steps) else []
        if isinstance(step, ExitStep):
            return []
        if isinstance(step, BranchStep):
            targets = []
            for target in (step.then, step.else_):
                if target is None:
                    targets += following
                elif target in ids:
                    targets.append(ids[target])
            return sorted(set(targets))
        if isinstance(step, WaitForStep) and step.on_timeout in ids:
            return sorted({*following, ids[step.on_timeout]})
        return following


# --- rules across steps -------------------------------------------------------------------------

Path = tuple[str | int, ...]


def step_problems(spec: PlaybookSpec) -> list[tuple[Path, str]]:
    """Problems no single field shows: duplicate ids, unknown targets, loops that never wait.

    Each problem is (path into the YAML document, message)."""
    problems: list[tuple[Path, str]] = []
    seen: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.id in seen:
            problems.append((("steps", i, "id"), f"duplicate step id {step.id!r} (also step {seen[step.id] + 1})"))
        else:
            seen[step.id] = i

    for i, step in enumerate(spec.steps):
        targets: list[tuple[str, str | None]] = []
        if isinstance(step, BranchStep):
            targets = [("then", step.then), ("else", step.else_)]
        elif isinstance(step, WaitForStep):
            targets = [("on_timeout", step.on_timeout)]
        for key, target in targets:
            if target is not None and target not in seen:
                close = difflib.get_close_matches(target, list(seen), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append((("steps", i, key), f"step {step.id!r}: {key} goes to unknown step {target!r}{hint}"))

    problems += _loops_without_wait(spec)
    return problems


def _loops_without_wait(spec: PlaybookSpec) -> list[tuple[Path, str]]:
    """A cycle of steps with no wait in it would run forever within one tick."""
    waits = {i for i, s in enumerate(spec.steps) if s.kind in WAITING_KINDS}
    edges = {i: [j for j in spec.successors(i) if j not in waits] for i in range(len(spec.steps)) if i not in waits}
    problems: list[tuple[Path, str]] = []
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    reported: set[frozenset[int]] = set()

    def visit(node: int, path: list[int]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    names = " -> ".join(spec.steps[k].id for k in [*cycle, nxt])
                    step = spec.steps[node]
                    key = "then" if isinstance(step, BranchStep) and step.then == spec.steps[nxt].id else None
                    if key is None and isinstance(step, BranchStep):
                        key = "else"
                    where: Path = ("steps", node, key) if key else ("steps", node, "id")
                    problems.append(
                        (
                            where,
                            f"step {spec.steps[node].id!r}: loop without a wait ({names}); add a wait or wait_for step to it",
                        )
                    )
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [])
    return problems


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a playbook file, for editors (yaml-language-server) and reviewers."""
    schema = PlaybookSpec.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://retain.dev/playbook.schema.json",
        "title": "Retain playbook",
        **{k: v for k, v in schema.items() if k != "title"},
    }
