"""The one sandboxed Jinja environment for every message Retain renders, and its checks.

Templates see ``account``, ``contact``, ``csm``, ``enrollment``, ``playbook``, ``secrets`` (resolved
at send time, never stored), ``unsubscribe_url`` and ``survey_url``; filters ``money``, ``date``
and ``days_until``. Unknown variables, unknown fields and private attributes are found at
validation, not in front of a customer.
"""

from __future__ import annotations

import difflib
import math
import re
import string
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, cast

import pendulum
from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    meta,
    nodes,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2 import filters as jfilters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateAssertionError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from sqlmodel import SQLModel

from models import Account, Contact, Enrollment, TemplateError, table_of

__all__ = [
    "MAX_NUMBER_BITS",
    "MAX_OUTPUT_CHARS",
    "MAX_TEMPLATE_CHARS",
    "MAX_TEMPLATE_TURNS",
    "RENDER_SECONDS",
    "TEMPLATE_FIELDS",
    "TEMPLATE_VARIABLES",
    "RenderLimits",
    "check_template",
    "environment",
    "render",
    "variables_for",
]


def _columns(table: type[SQLModel]) -> set[str]:
    return {c.name for c in table_of(table).columns}


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


#: steps whose output goes to a system, not to a person nor a stored record: only they see secrets
SECRET_KINDS = frozenset({"webhook", "slack"})


def variables_for(kind: str | None) -> frozenset[str]:
    """The template variables a step of this kind can use. ``secrets`` only in webhook and Slack
    steps: a secret must never reach a customer (email, survey) nor be stored for people to read
    (tasks, outcomes)."""
    if kind == "survey":
        allowed = TEMPLATE_VARIABLES
    elif kind == "email":
        allowed = TEMPLATE_VARIABLES - {"survey_url"}
    else:
        allowed = TEMPLATE_VARIABLES - _PER_CONTACT
    return allowed if kind is None or kind in SECRET_KINDS else allowed - {"secrets"}


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
    if type(value) is date and type(fmt) is str:  # a calendar day always reads the same: formatted once
        return _formatted(value, fmt, pendulum.get_locale())
    when = _as_pendulum(value)
    return "" if when is None else when.format(fmt, locale=_locale(pendulum.get_locale()))


@lru_cache(maxsize=4_096)
def _formatted(value: date, fmt: str, locale: str) -> str:
    """:func:`_date` of a calendar day: renewal dates repeat across a book, and pendulum's
    formatting was a third of rendering an email (see docs/performance.md)."""
    when = _as_pendulum(value)
    return "" if when is None else when.format(fmt, locale=_locale(locale))


@cache
def _locale(name: str) -> Any:
    """pendulum's locale, loaded once: loading it again for every date was a third of rendering
    an email (see docs/performance.md)."""
    from pendulum.locales.locale import Locale

    return Locale.load(name)


@pass_context
def _days_until(context: Context, value: Any) -> int | None:
    when = _as_pendulum(value)
    if when is None:
        return None
    now = context.get("now") or pendulum.now("UTC")
    today = pendulum.instance(now).date() if isinstance(now, datetime) else now
    target = when.date() if isinstance(when, datetime) else when
    return (target - today).days


# --- limits: what one template may cost (docs/security.md states them) ------------------------------

#: a template's source, inline or in a file
MAX_TEMPLATE_CHARS = 100_000
#: one render's output; also the bound of any text or list a template builds on the way
MAX_OUTPUT_CHARS = 200_000
#: loop turns and calls (macros, methods, functions) in one render
MAX_TEMPLATE_TURNS = 10_000
#: the wall-clock budget of one render
RENDER_SECONDS = 2.0
#: integers a template computes (about 1,200 digits): ``9 ** (9 ** 9)`` is refused, not computed
MAX_NUMBER_BITS = 4_096


@dataclass(frozen=True)
class RenderLimits:
    """The budget of one render (the defaults are the documented limits)."""

    output_chars: int = MAX_OUTPUT_CHARS
    turns: int = MAX_TEMPLATE_TURNS
    seconds: float = RENDER_SECONDS


class _LimitExceeded(SecurityError):
    """A template went past one of its limits (a Jinja error, so Jinja passes it through as is)."""


class _Budget:
    """What the current render has used; every loop turn, call and operator checks it."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.turns = 0

    def turn(self) -> None:
        self.turns += 1
        if self.turns > self.limits.turns:
            raise _LimitExceeded(
                f"more than {self.limits.turns:,} loop turns and calls in one message (the limit of one render)"
            )
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"rendering took longer than {self.limits.seconds:g} s (the limit of one render)")


_BUDGET: ContextVar[_Budget | None] = ContextVar("retain_template_budget", default=None)


def _turn() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.turn()


def _check_time() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.check_time()


def _output_limit() -> int:
    budget = _BUDGET.get()
    return budget.limits.output_chars if budget is not None else MAX_OUTPUT_CHARS


def _check_size(size: int, what: str) -> None:
    limit = _output_limit()
    if size > limit:
        raise _LimitExceeded(f"{what} would make {size:,} characters or items (the limit is {limit:,})")


def _check_number(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_NUMBER_BITS:
        raise _LimitExceeded(f"a number larger than 2**{MAX_NUMBER_BITS} (the limit of numbers in templates)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple | bytes)


# --- printing: text, numbers, dates, lists and mappings; never Python's internals -------------------

_PLAIN = (str, int, float, Decimal, date, datetime, dt_time, timedelta)
#: how Python shows its internals (``<class 'x'>``, ``<function f at 0x…>``, ``<X object at 0x…>``)
_INTERNALS = re.compile(
    r"<(?:class|function|built-in (?:method|function)|bound method|method|module|generator|coroutine|frame|code)[ ']"
    r"|<[\w.]+ object at 0x[0-9a-fA-F]+>"
    r"|<(?:TemplateReference|LoopContext|Macro|Undefined|Namespace|Cycler|Joiner)\b",
    re.IGNORECASE,  # also after |upper
)


def _printable(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, _PLAIN):
        return True
    if depth > 20:
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return all(_printable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_printable(k, depth + 1) and _printable(v, depth + 1) for k, v in value.items())
    return False


def _what(value: Any) -> str:
    if isinstance(value, type):
        return "a class"
    if callable(value):
        return "a function or method"
    return f"a {type(value).__name__} object"


def _require_printable(value: Any) -> Any:
    if not _printable(value):
        raise SecurityError(
            f"a template cannot print {_what(value)}: only text, numbers, dates, lists and mappings are printed"
        )
    return value


def _finalize(value: Any) -> Any:
    if value is None:
        return ""  # a missing plan prints nothing, not "None"
    if isinstance(value, Undefined):
        return value  # Jinja names the undefined variable itself
    return _require_printable(value)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]?")


def _check_percent_format(fmt: str, args: Any) -> None:
    """``'%0999999999d' % 1`` would allocate a gigabyte: widths are summed and bounded first."""
    total = len(fmt)
    for width, precision in _PERCENT_SPEC.findall(fmt):
        if "*" in (width, precision):
            raise SecurityError("a '*' width in a % format is not allowed in templates")
        total += int(width or 0) + int(precision or 0)
    _check_size(total, "a % format")
    values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    for value in values:
        _require_printable(value)


def _check_brace_format(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``'{:>999999999}'.format(1)``: the same for ``str.format`` and ``format_map``."""
    total = len(fmt)
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise SecurityError(f"format string: {exc}") from exc
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise SecurityError("a nested '{…}' in a format specification is not allowed in templates")
        total += sum(int(n) for n in re.findall(r"\d+", spec or ""))
    _check_size(total, "a format")
    for value in (*args, *kwargs.values()):
        _require_printable(value)


# --- the filters and globals that could build something huge, bounded ------------------------------


def _center(value: Any, width: int = 80) -> str:
    _check_size(int(width), "center")
    return str(jfilters.do_center(value, width))


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    pad = len(width) if isinstance(width, str) else int(width)
    _check_size(len(text) + (text.count("\n") + 1) * pad, "indent")
    return str(jfilters.do_indent(text, width, first, blank))


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(s), str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    _check_size(len(text) + found * max(0, len(new) - len(old)), "replace")
    return str(jfilters.do_replace(eval_ctx, text, old, new, count))


@pass_environment
def _wordwrap(
    environment: Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = str(s)
    breaks = len(text) // max(1, int(width)) + text.count("\n") + 1
    _check_size(len(text) + breaks * len(wrapstring or "\n"), "wordwrap")
    return jfilters.do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent_format(str(value), kwargs or args)
    return str(jfilters.do_format(value, *args, **kwargs))


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    _check_size(len(str(d)) * max(0, len(items) - 1), "join")
    if attribute is None:
        for item in items:
            _require_printable(item)
        _check_size(sum(len(i) if isinstance(i, str) else 24 for i in items), "join")
    return str(jfilters.sync_do_join(eval_ctx, items, d, attribute))


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    _check_size(int(slices), "slice")
    return jfilters.sync_do_slice(value, slices, fill_with)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    _check_size(int(linecount), "batch")
    return jfilters.do_batch(value, linecount, fill_with)


def _string(value: Any) -> str:
    return str(_require_printable(value))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _check_size(int(n) * int(max) * 12, "lipsum")
    return str(generate_lorem_ipsum(n, html, min, max))


@pass_context
def _counted(context: Context, iterable: Any) -> Iterator[Any]:
    """Every loop of a template iterates through this: each turn is counted and timed."""
    for item in iterable:
        _turn()
        yield item


_COUNTED = "_retain_counted"  # the filter wrapped around every loop's iterable


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator without constant folding of user expressions (``{{ 'x' * 10**9 }}``
    would be computed while *validating*), and with ``~`` bounded like ``+``."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.retain_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with limits: size checks before an operation builds anything, a turn and time
    check on every loop turn and call, and no Python internals printed."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        for loop in source.find_all(nodes.For):
            if not (isinstance(loop.iter, nodes.Filter) and loop.iter.name == _COUNTED):
                loop.iter = nodes.Filter(loop.iter, _COUNTED, [], [], None, None, lineno=loop.iter.lineno)
        return super()._generate(source, name, filename, defer_init)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one plain dict (Jinja's is a ChainMap over the environment's,
        which every render copied and listed again: a tenth of rendering an email). The
        environment's globals are all set before any template is compiled (:func:`environment`)."""
        return {**self.globals, **(d or {})}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            if _sized(left) and _is_int(right):
                _check_size(len(left) * right, "'*'")
            elif _sized(right) and _is_int(left):
                _check_size(len(right) * left, "'*'")
            elif _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_NUMBER_BITS + 1:
                raise _LimitExceeded(f"a number larger than 2**{MAX_NUMBER_BITS} (the limit of numbers in templates)")
        elif operator == "+" and _sized(left) and _sized(right):
            _check_size(len(left) + len(right), "'+'")
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            if right * math.log2(abs(left)) > MAX_NUMBER_BITS:
                raise _LimitExceeded(
                    f"{left} ** {right} is larger than 2**{MAX_NUMBER_BITS} (the limit of numbers in templates)"
                )
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left, right)
        result = self.binop_table[operator](left, right)
        _check_number(result)
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _turn()
        args = _checked_method_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_map:
                mapping = args[0] if args else {}
                _check_brace_format(fmt, (), dict(mapping) if isinstance(mapping, dict) else {})
            else:
                _check_brace_format(fmt, args, kwargs)
            return str(wrapped(*args, **kwargs))

        return checked

    def retain_concat(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b``: printable parts only, and no longer than a message may be."""
        for part in parts:
            _require_printable(part)
        texts = [str(p) for p in parts]
        _check_size(sum(map(len, texts)), "'~'")
        return "".join(texts)


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _checked_method_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Methods of text and numbers that could build something huge are sized before they run."""
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if isinstance(owner, str | bytes):
        if name in _WIDTH_METHODS and args and _is_int(args[0]):
            _check_size(args[0], name)
        elif name == "expandtabs":
            tab = args[0] if args and _is_int(args[0]) else int(kwargs.get("tabsize", 8))
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _check_size(len(owner) + tabs * tab, name)
        elif name == "replace" and len(args) >= 2 and _sized(args[0]) and _sized(args[1]):
            found = owner.count(args[0]) if args[0] else len(owner) + 1
            _check_size(len(owner) + found * max(0, len(args[1]) - len(args[0])), name)
        elif name == "join" and args:
            items = list(args[0])
            _check_size(sum(len(i) if _sized(i) else 0 for i in items) + len(owner) * len(items), name)
            return (items, *args[1:])
    elif _is_int(owner) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        _check_size(int(length), name)
    return args


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The sandbox: no access to private attributes or mutation, undefined names fail loudly, no
    constant folding, every loop and call counted and timed, sizes checked before anything is built
    (see the limits above), and nothing but text, numbers, dates, lists and mappings printed."""
    env = _Sandbox(
        loader=BaseLoader(),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
        optimized=False,
    )
    env.filters.update(
        money=_money,
        date=_date,
        days_until=_days_until,
        center=_center,
        indent=_indent,
        replace=_replace,
        wordwrap=_wordwrap,
        format=_format,
        join=_join,
        slice=_slice,
        batch=_batch,
        string=_string,
    )
    env.filters[_COUNTED] = _counted
    del env.filters["pprint"]  # it prints Python's representation of anything, internals included
    env.globals["lipsum"] = _lipsum
    return env


def check_template(source: str, *, allowed: frozenset[str] = TEMPLATE_VARIABLES) -> list[tuple[int, str]]:
    """Every problem in a template, as (line within the template, message)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return [(1, f"template is {len(source):,} characters long (the limit is {MAX_TEMPLATE_CHARS:,})")]
    env = environment()
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [(exc.lineno or 1, f"template syntax: {exc.message}")]
    except RecursionError:
        return [(1, "template syntax: nested too deeply")]
    try:
        env.compile(ast)
    except TemplateAssertionError as exc:  # e.g. an unknown filter
        message = exc.message or ""
        public = [f for f in env.filters if not f.startswith("_")]
        hint = _did_you_mean(message.split("'")[1], public) if "No filter named" in message else ""
        return [(exc.lineno or 1, f"template: {exc.message}{hint}")]
    except RecursionError:
        return [(1, "template: nested too deeply")]
    problems = _constant_limits(ast)
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name == "secrets" and name not in allowed:
            lineno = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), 1)
            problems.append(
                (
                    lineno,
                    "secrets are only for webhook and slack steps: a secret must never reach a customer or a stored record",
                )
            )
        elif name not in allowed:
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


def render(source: str, variables: Mapping[str, Any], *, limits: RenderLimits | None = None) -> str:
    """Render a template in the sandbox (compiled once per source) within ``limits`` (output size,
    loop turns and calls, wall-clock time); any failure becomes a :class:`TemplateError`."""
    limits = limits or RenderLimits()
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template is {len(source):,} characters long (the limit is {MAX_TEMPLATE_CHARS:,})")
    budget = _Budget(limits)
    token = _BUDGET.set(budget)
    try:
        parts: list[str] = []
        size = 0
        for chunk in _compiled(source).generate(**variables):
            size += len(chunk)
            if size > limits.output_chars:
                raise _LimitExceeded(f"the message is longer than {limits.output_chars:,} characters")
            budget.check_time()
            parts.append(chunk)
    except _LimitExceeded as exc:
        raise TemplateError(f"template stopped: {exc.message}") from None
    except JinjaTemplateError as exc:
        raise TemplateError(f"template failed to render: {exc}", lineno=getattr(exc, "lineno", None)) from exc
    except RecursionError:
        raise TemplateError("template failed to render: macros call each other too deeply") from None
    except Exception as exc:  # a division by zero, a date that does not parse, ...: this message only
        raise TemplateError(f"template failed to render: {type(exc).__name__}: {exc}") from exc
    finally:
        _BUDGET.reset(token)
    text = "".join(parts)
    _refuse_internals(text, variables)
    return text


def _refuse_internals(text: str, variables: Mapping[str, Any]) -> None:
    """The last guard: a Python representation (``<class 'x'>``, ``<… object at 0x…>``) in the
    output, unless it was in the data (a customer may be called anything)."""
    for found in _INTERNALS.finditer(text):
        if not _in_data(found.group(0), variables):
            raise TemplateError(
                f"template failed to render: it printed Python's representation of an object ({found.group(0)}…): "
                "only text, numbers, dates, lists and mappings are printed"
            )


def _in_data(fragment: str, value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return fragment in value
    if depth > 20:
        return False
    if isinstance(value, Mapping):
        return any(_in_data(fragment, v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_in_data(fragment, v, depth + 1) for v in value)
    return False


class _NotConstant(Exception):
    pass


_SIZING_FILTERS = frozenset({"center", "indent", "replace", "wordwrap", "format", "join", "slice", "batch"})


def _constant_limits(ast: nodes.Template) -> list[tuple[int, str]]:
    """Constant parts that would go past a limit (``'x' * 10**9``, ``'x'|center(10**9)``,
    ``9 ** (9 ** 9)``), found at validation by the same checks a render makes, and within a
    budget of their own: nothing is folded or computed beyond the limits."""
    problems: list[tuple[int, str]] = []
    token = _BUDGET.set(_Budget(RenderLimits(seconds=1.0)))
    try:
        for node in ast.find_all((nodes.BinExpr, nodes.Filter, nodes.Call)):
            try:
                _constant(node)
            except (_NotConstant, TypeError, ValueError, ArithmeticError, AttributeError):
                continue
            except _LimitExceeded as exc:
                if "loop turns" in (exc.message or "") or "took longer" in (exc.message or ""):
                    break  # the check's own budget is spent: the render's limits still hold
                problems.append((node.lineno, f"template: {exc.message}"))
            except SecurityError as exc:
                problems.append((node.lineno, f"template: {exc.message}"))
    finally:
        _BUDGET.reset(token)
    return problems


def _constant(node: nodes.Node) -> Any:
    """The value of a constant expression, computed under the template limits; :class:`_NotConstant`
    if it depends on anything but written-out values."""
    _turn()
    env = cast(_Sandbox, environment())
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_constant(item) for item in node.items]
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Neg | nodes.Pos):
        return env.unop_table[node.operator](_constant(node.node))
    if isinstance(node, nodes.BinExpr) and node.operator in env.binop_table:
        left, right = _constant(node.left), _constant(node.right)
        if node.operator in env.intercepted_binops:
            return env.call_binop(cast(Context, None), node.operator, left, right)
        return env.binop_table[node.operator](left, right)
    if isinstance(node, nodes.Concat):
        return env.retain_concat(tuple(_constant(n) for n in node.nodes))
    if (
        isinstance(node, nodes.Filter)
        and node.name in _SIZING_FILTERS
        and node.node is not None
        and not node.kwargs
        and node.dyn_args is None
        and node.dyn_kwargs is None
    ):
        value, args = _constant(node.node), [_constant(a) for a in node.args]
        func = env.filters[node.name]
        if node.name in ("replace", "join"):
            return func(EvalContext(env), value, *args)
        if node.name == "wordwrap":
            return func(env, value, *args)
        return func(value, *args)
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "lipsum":
        if node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _NotConstant()
        return _lipsum(*[_constant(a) for a in node.args])
    raise _NotConstant()


def _const_key(node: nodes.Getitem) -> str | None:
    arg = node.arg
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


def _did_you_mean(word: str, choices: Any, *, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""
