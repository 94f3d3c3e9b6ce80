"""The expression language of playbooks: parsed (never ``eval``ed), type-checked against the
tables, compiled to SQL for audiences and contacts, evaluated in Python for one enrollment, with
the same result both ways (SQL's three-valued logic, integer day arithmetic).

Typical use::

    expr = compile_expression('account.status == "active" and days_until(account.renewal_date) <= 90', AUDIENCE)
    query = select(Account.id).where(to_sql(expr, AUDIENCE, now=now, today=today))
    holds = evaluate(expr, env_for(session, account, now=now, today=today)) is True

Errors are :class:`models.ExpressionError` with ``message`` and ``offset`` (0-based, in the text):

- ``expression syntax: <Python's message>``, ``empty expression``
- ``not allowed in an expression: <construct>`` (subscript, lambda, f-string, keyword argument, ...)
- ``disallowed name '<name>'`` (anything starting with ``_``)
- ``unknown name|field|function '<x>' (did you mean '<y>'?)``
- ``'<name>' is not available here (available: <names>)``, ``<f>() cannot be used in <place>``
- ``<f>() takes <n> argument(s) (<m> given)``
- ``cannot compare <type> with <type>: <source>``, ``cannot order text: <source> (...)``,
  ``cannot apply '<op>' to <type> and <type>: <source>``
- ``use 'is none' to test for a missing value``, ``chain comparisons with 'and'``
- ``expected a condition (true/false), got <type>``, ``expected a date or timestamp, got <type>``
"""

from __future__ import annotations

from playbooks._expr.check import AUDIENCE, CONTACTS, DECLARED_TYPES, ENROLLMENT, EVENT, Scope, check, fields_of
from playbooks._expr.check import expect as _expect  # compile_expression's parameter is called expect
from playbooks._expr.explain import Clause, clause_columns, clause_sql, explain, json_bool, json_object
from playbooks._expr.pyeval import Env, env_for, evaluate, read_as
from playbooks._expr.sql import to_sql
from playbooks._expr.syntax import Expr, parse

__all__ = [
    "AUDIENCE",
    "CONTACTS",
    "DECLARED_TYPES",
    "ENROLLMENT",
    "EVENT",
    "Clause",
    "Env",
    "Expr",
    "Scope",
    "check",
    "clause_columns",
    "clause_sql",
    "compile_expression",
    "env_for",
    "evaluate",
    "explain",
    "fields_of",
    "json_bool",
    "json_object",
    "parse",
    "read_as",
    "to_sql",
]


def compile_expression(text: str, scope: Scope, expect: str = "bool") -> Expr:
    """Parse and check ``text`` for ``scope``; ``expect`` is what its place needs: ``"bool"`` (a
    condition) or ``"date"`` (a date or timestamp). Raises the first :class:`ExpressionError`."""
    expr = parse(text)
    _expect(expr, scope, expect)
    return expr
