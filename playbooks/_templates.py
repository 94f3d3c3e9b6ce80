"""The one sandboxed Jinja environment for every message Retain renders, and its checks.

Templates see ``account``, ``contact``, ``csm``, ``enrollment``, ``playbook``, ``secrets`` (resolved
at send time, never stored), ``unsubscribe_url`` and ``survey_url``; filters ``money``, ``date``
and ``days_until``. Unknown variables, unknown fields and private attributes are found at
validation, not in front of a customer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, cast

import pendulum
from jinja2 import BaseLoader, StrictUndefined, Template, TemplateSyntaxError, meta, nodes, pass_context
from jinja2.exceptions import TemplateAssertionError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlmodel import SQLModel

from models import Account, Contact, Enrollment, TemplateError

__all__ = ["TEMPLATE_FIELDS", "TEMPLATE_VARIABLES", "check_template", "environment", "render", "variables_for"]


def _columns(table: type[SQLModel]) -> set[str]:
    return {c.name for c in table.__table__.columns}  # type: ignore[attr-defined]


#: the fields each template variable offers; ``None``: any name (secrets are looked up at send time)
TEMPLATE_FIELDS: dict[str, set[str] | None] = {
    "account": _columns(Account),
    "contact": _columns(Contact) | {"first_name"},
    "csm": {"email", "name", "first_name"},
    "enrollment": _columns(Enrollment) - {"state", "claimed_by", "claimed_until"},
    "playbook": {"id", "name", "lifecycle", "revision", "description"},
    "secrets": None,
}
TEMPLATE_VARIABLES = frozenset(TEMPLATE_FIELDS) | {"unsubscribe_url", "survey_url", "now", "step"}
#: messages to a contact (email, survey) see the contact; the others (tasks, Slack, webhooks) do not
_PER_CONTACT = frozenset({"contact", "unsubscribe_url", "survey_url"})


def variables_for(kind: str | None) -> frozenset[str]:
    """The template variables a step of this kind can use."""
    if kind == "survey":
        return TEMPLATE_VARIABLES
    if kind == "email":
        return TEMPLATE_VARIABLES - {"survey_url"}
    return TEMPLATE_VARIABLES - _PER_CONTACT


def _money(value: Any, currency: str | None = None) -> str:
    """``12000`` -> ``$12,000``; ``1234.5`` -> ``$1,234.50``; other currencies get their code."""
    if value is None:
        return ""
    amount = Decimal(str(value))
    text = f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get((currency or "USD").upper())
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def _as_pendulum(value: Any) -> pendulum.DateTime | pendulum.Date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return pendulum.instance(value)
    if isinstance(value, date):
        return pendulum.Date(value.year, value.month, value.day)
    parsed = pendulum.parse(str(value))
    return parsed  # type: ignore[return-value]


def _date(value: Any, fmt: str = "MMMM D, YYYY") -> str:
    """Format a date or timestamp for people: ``March 1, 2027`` (pendulum tokens)."""
    when = _as_pendulum(value)
    return "" if when is None else when.format(fmt)


@pass_context
def _days_until(context: Context, value: Any) -> int | None:
    when = _as_pendulum(value)
    if when is None:
        return None
    now = context.get("now") or pendulum.now("UTC")
    today = pendulum.instance(now).date() if isinstance(now, datetime) else now
    target = when.date() if isinstance(when, datetime) else when
    return (target - today).days  # type: ignore[no-any-return]


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The sandbox: no access to private attributes or mutation, undefined names fail loudly."""
    env = ImmutableSandboxedEnvironment(
        loader=BaseLoader(),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=lambda value: "" if value is None else value,  # a missing plan prints nothing, not "None"
    )
    env.filters.update(money=_money, date=_date, days_until=_days_until)
    return env


def check_template(source: str, *, allowed: frozenset[str] = TEMPLATE_VARIABLES) -> list[tuple[int, str]]:
    """Every problem in a template, as (line within the template, message)."""
    env = environment()
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [(exc.lineno or 1, f"template syntax: {exc.message}")]
    try:
        env.compile(ast)
    except TemplateAssertionError as exc:  # e.g. an unknown filter
        message = exc.message or ""
        hint = _did_you_mean(message.split("'")[1], env.filters) if "No filter named" in message else ""
        return [(exc.lineno or 1, f"template: {exc.message}{hint}")]
    problems: list[tuple[int, str]] = []
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in allowed:
            lineno = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), 1)
            hint = _did_you_mean(name, allowed)
            problems.append(
                (lineno, f"unknown template variable {name!r}{hint}; available: {', '.join(sorted(allowed))}")
            )
    found = ast.find_all((nodes.Getattr, nodes.Getitem))  # typed as their common base, Expr
    for node in cast(Iterator[nodes.Getattr | nodes.Getitem], found):
        attr = node.attr if isinstance(node, nodes.Getattr) else _const_key(node)
        if attr is None:
            continue
        if attr.startswith("_"):
            problems.append((node.lineno, f"private attribute {attr!r} is not allowed in templates"))
            continue
        if isinstance(node.node, nodes.Name) and node.node.name in allowed:
            fields = TEMPLATE_FIELDS.get(node.node.name, set())
            if fields is not None and attr not in fields:
                hint = _did_you_mean(attr, fields, prefix=f"{node.node.name}.")
                problems.append((node.lineno, f"unknown field '{node.node.name}.{attr}'{hint}"))
    return sorted(set(problems))


@lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    return environment().from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render a template in the sandbox (compiled once per source); any failure becomes a
    :class:`TemplateError`."""
    try:
        return _compiled(source).render(**variables)
    except JinjaTemplateError as exc:
        raise TemplateError(f"template failed to render: {exc}", lineno=getattr(exc, "lineno", None)) from exc


def _const_key(node: nodes.Getitem) -> str | None:
    arg = node.arg
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


def _did_you_mean(word: str, choices: Any, *, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""
