"""The sources file: what ``playbooks/sources.yaml`` means, checked field by field.

It holds the activation event (the product event that onboards an account) and the team's named
**SQL sources**: a query against any SQLAlchemy URL (a warehouse, a CRM or billing replica, another
PostgreSQL), the kind of data it feeds, how its columns map onto that kind's import columns, the
cursor column that tells changed rows, a batch size and a schedule::

    activation_event: Onboarding Completed
    sources:
      crm_accounts:
        kind: accounts
        url: {env: WAREHOUSE_URL}          # or {secret: warehouse}; never a password in this file
        query: SELECT id, company, plan, arr, updated_at FROM crm.accounts
        columns: {external_id: id, name: company}
        cursor: updated_at
        batch_size: 5000
        schedule: {cron: "*/30 * * * *", timezone: UTC}

Models are pydantic v2, frozen, and refuse unknown keys, like the playbook models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .playbook import Schedule

__all__ = [
    "REQUIRED_COLUMNS",
    "SOURCE_COLUMNS",
    "SOURCE_KINDS",
    "SourceName",
    "SourcesSpec",
    "SqlSource",
    "StripeSource",
    "UrlFrom",
    "sources_json_schema",
]

#: the kinds of data a SQL source feeds, in the order ``retain sync`` runs them (accounts before
#: what names them)
SOURCE_KINDS = ("accounts", "contacts", "revenue", "usage", "tickets", "events")
SourceKind = Literal["accounts", "contacts", "revenue", "usage", "tickets", "events"]

#: each kind's import columns (those of ``retain <kind> import``; usage as daily values), required first
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": (
        "external_id", "name", "plan", "arr", "currency", "status", "renewal_date", "csm_email", "csm_name",
        "timezone", "country", "segment", "industry", "lifecycle_stage", "signup_date", "onboarded_at",
        "renewed_at", "cancelled_at", "churned_at", "reactivated_at", "seats", "health", "health_score",
    ),
    "contacts": ("account_external_id", "email", "name", "role", "title", "timezone", "is_primary", "unsubscribed"),
    "revenue": (
        "customer", "date", "amount", "service_start", "service_end", "product", "plan", "currency", "invoice",
        "credits",
    ),
    "usage": ("account_external_id", "metric", "day", "value"),
    "tickets": (
        "external_id", "account_external_id", "opened_at", "subject", "status", "priority", "closed_at",
        "satisfaction",
    ),
    "events": ("type", "user_id", "timestamp", "message_id", "event", "group_id", "properties", "traits", "context"),
}  # fmt: skip
#: the columns a row of each kind must have
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": ("external_id", "name"),
    "contacts": ("account_external_id", "email"),
    "revenue": ("customer", "date", "amount"),
    "usage": ("account_external_id", "metric", "day", "value"),
    "tickets": ("external_id", "account_external_id", "opened_at"),
    "events": ("type", "user_id", "timestamp"),
}

_NAME = r"^[a-z][a-z0-9_]{0,59}$"
SourceName = Annotated[str, StringConstraints(pattern=_NAME)]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"[a-z][a-z0-9_]*")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UrlFrom(_Strict):
    """Where a source's URL (with its credentials) or a connector's key is kept: an environment
    variable, or a secret (``RETAIN_SECRET_<NAME>``, else the Prefect Secret block ``retain-<name>``)."""

    env: str | None = None
    secret: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> UrlFrom:
        if (self.env is None) == (self.secret is None):
            raise ValueError("give its place as {env: VARIABLE} or {secret: name}, one of the two")
        if self.env is not None and not _ENV_NAME.fullmatch(self.env):
            raise ValueError(f"{self.env!r} is not an environment variable's name (letters, digits, _)")
        if self.secret is not None and not _SECRET_NAME.fullmatch(self.secret):
            raise ValueError(f"{self.secret!r} is not a secret's name (lower-case letters, digits, _)")
        return self

    def describe(self) -> str:
        return f"${self.env}" if self.env else f"secret {self.secret!r}"


def _url_without_password(value: str) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            f"{value!r} is not a SQLAlchemy URL such as sqlite:///warehouse.db or postgresql://host/db"
        ) from None
    if url.password:
        raise ValueError(
            "the URL holds a password: credentials never go in this file; keep the URL in an environment "
            "variable (url: {env: WAREHOUSE_URL}) or a secret (url: {secret: warehouse})"
        )
    return value


def _source_url(value: Any) -> Any:
    """A URL without a password, or where the URL is kept; one clear message either way."""
    if isinstance(value, str):
        return _url_without_password(value)
    if isinstance(value, dict):
        unknown = sorted(set(map(str, value)) - {"env", "secret"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}: give {{env: VARIABLE}} or {{secret: name}}")
        try:
            return UrlFrom.model_validate(value)
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    raise ValueError("expected a URL without a password, {env: VARIABLE} or {secret: name}")


def _query(value: str) -> str:
    text = value.strip().rstrip(";").strip()
    if not text:
        raise ValueError("the query is empty")
    if ";" in text:
        raise ValueError("one statement only: the query is read as one SELECT (remove the ';')")
    if not re.match(r"(?is)^\s*(select|with)\b", text):
        raise ValueError("the query must be a SELECT (or WITH ... SELECT): a sync only reads")
    return text


def _column(value: str) -> str:
    if not _COLUMN.fullmatch(value):
        raise ValueError(f"{value!r} is not a column name of the query (letters, digits, _; alias it in the query)")
    return value


Column = Annotated[str, AfterValidator(_column)]


class SqlSource(_Strict):
    """A named query that feeds one kind of data, incrementally by its cursor column."""

    kind: SourceKind
    url: Annotated[str | UrlFrom, BeforeValidator(_source_url)]
    query: Annotated[str, AfterValidator(_query)]
    #: Retain's import column -> the query's column (query columns named like Retain's need no entry)
    columns: dict[str, Column] = {}
    #: the query's column that grows when a row changes (updated_at, an id, a version number)
    cursor: Column
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    schedule: Schedule | None = None
    #: revenue: create the customers that are not accounts yet (named after their id)
    create_accounts: bool = False

    @model_validator(mode="after")
    def _known_columns(self) -> SqlSource:
        known = SOURCE_COLUMNS[self.kind]
        for column in self.columns:
            if column not in known:
                raise ValueError(
                    f"columns: {column!r} is not a column of {self.kind}; {self.kind} has: {', '.join(known)}"
                )
        if self.create_accounts and self.kind != "revenue":
            raise ValueError("create_accounts is for revenue sources only")
        return self

    def query_column(self, column: str) -> str:
        """The query's column that holds Retain's ``column``."""
        return self.columns.get(column, column)


def _kept_elsewhere(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "an API key never goes in this file: keep it in an environment variable (key: {env: STRIPE_API_KEY}) "
            "or a secret (key: {secret: stripe})"
        )
    return value


class StripeSource(_Strict):
    """Stripe: customers become accounts (their live subscription gives the plan and renewal date),
    invoices and credit notes become revenue; deleted customers are marked churned."""

    kind: ClassVar[str] = "stripe"
    key: Annotated[UrlFrom, BeforeValidator(_kept_elsewhere)]
    schedule: Schedule | None = None


class SourcesSpec(_Strict):
    """``sources.yaml``: the activation event, the SQL sources by name, and the Stripe connector."""

    activation_event: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = (
        None
    )
    sources: dict[SourceName, SqlSource] = {}
    stripe: StripeSource | None = None

    @model_validator(mode="after")
    def _not_status(self) -> SourcesSpec:
        if "status" in self.sources:
            raise ValueError("sources: 'status' cannot name a source: `retain sync status` shows them all")
        if "stripe" in self.sources:
            raise ValueError("sources: 'stripe' names the Stripe connector (its own key, stripe:); rename this one")
        return self

    def every_source(self) -> dict[str, SqlSource | StripeSource]:
        """Every source by the name ``retain sync`` knows it by (Stripe as ``stripe``)."""
        found: dict[str, SqlSource | StripeSource] = {"stripe": self.stripe} if self.stripe is not None else {}
        return {**found, **self.sources}


def sources_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``sources.yaml``, for editors (yaml-language-server) and reviewers."""
    schema = SourcesSpec.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://retain.dev/sources.schema.json",
        "title": "Retain sources",
        **{k: v for k, v in schema.items() if k != "title"},
    }
