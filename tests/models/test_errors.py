"""Retain's errors survive a pickle round trip: Prefect moves exceptions between processes (a task
run in a worker, a flow run's result), and an error that cannot be rebuilt there turns into a
confusing ``TypeError`` instead of the message a person can act on."""

from __future__ import annotations

import pickle

import pytest

import models.errors
from flows.analytics.surveys import InvalidSurveyToken, SurveyError
from flows.reports.charts import NothingToChart
from models.errors import (
    ConfigError,
    DataImportError,
    ExpressionError,
    IntegrationError,
    MaybeDeliveredError,
    NotFoundError,
    PlaybookError,
    Problem,
    RetainError,
    RetryableError,
    RowProblem,
    TemplateError,
)

#: one realistic instance of every error, as the code raises it
ERRORS: list[RetainError] = [
    RetainError("something went wrong"),
    ConfigError("RETAIN_SMTP_URL is set but RETAIN_EMAIL_FROM is not"),
    NotFoundError("no account 'acme-x'; did you mean 'acme'?"),
    PlaybookError(
        [
            Problem("unknown step kind 'emial'", "playbooks/renewal.yaml", 12, 11, "remind", "    kind: emial"),
            Problem("'wait' needs a duration", "playbooks/renewal.yaml", 4, 5, "pause"),
            Problem("the file is empty", "playbooks/empty.yaml"),
        ]
    ),
    ExpressionError("unknown field 'ar' (did you mean 'arr'?)", offset=7),
    TemplateError("'first_nam' is undefined", lineno=3, name="renewal/reminder.txt"),
    DataImportError(
        "accounts.csv",
        [RowProblem(3, "'12,50' is not an amount", "ARR"), RowProblem(7, "a value is required", "name")],
    ),
    IntegrationError("slack chat.postMessage: channel_not_found", status_code=200, response="channel_not_found"),
    RetryableError("crm: HTTP 429 Too Many Requests", status_code=429, response="slow down", retry_after=2.5),
    MaybeDeliveredError("webhook: no answer within 10 s", status_code=None, response=None, retry_after=None),
    SurveyError("a score of 11 is out of range for NPS (0 to 10)"),
    InvalidSurveyToken("the survey link was changed or cut short"),
    NothingToChart("no revenue in the period: nothing to chart"),
]


def _attributes(error: BaseException) -> dict[str, object]:
    return dict(vars(error))


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_an_error_survives_a_pickle_round_trip(error: RetainError, protocol: int) -> None:
    error.add_note("while advancing 'renewal'")
    try:
        copy = pickle.loads(pickle.dumps(error, protocol=protocol))
    finally:
        del error.__notes__

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert _attributes(copy) == {**_attributes(error), "__notes__": ["while advancing 'renewal'"]}


def test_the_attributes_callers_read_come_back() -> None:
    playbook, data, retry = ERRORS[3], ERRORS[6], ERRORS[8]
    assert isinstance(playbook, PlaybookError)
    assert isinstance(data, DataImportError)
    assert isinstance(retry, RetryableError)

    playbook_copy = pickle.loads(pickle.dumps(playbook))
    assert [p.format() for p in playbook_copy.problems] == [
        "playbooks/empty.yaml:1:1: the file is empty",
        "playbooks/renewal.yaml:4:5: 'wait' needs a duration",
        "playbooks/renewal.yaml:12:11: unknown step kind 'emial'",
    ]
    assert playbook_copy.problems[2].format(with_snippet=True).endswith("           ^")

    data_copy = pickle.loads(pickle.dumps(data))
    assert data_copy.file == "accounts.csv"
    assert data_copy.problems == [
        RowProblem(3, "'12,50' is not an amount", "ARR"),
        RowProblem(7, "a value is required", "name"),
    ]

    retry_copy = pickle.loads(pickle.dumps(retry))
    assert (retry_copy.status_code, retry_copy.response, retry_copy.retry_after) == (429, "slow down", 2.5)
    assert isinstance(retry_copy, IntegrationError)


def test_a_cause_is_dropped_but_the_error_is_whole() -> None:
    """Pickle leaves ``__cause__`` behind (as for every exception); the error itself still arrives."""
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise DataImportError("contacts.csv", [RowProblem(1, "cannot write")]) from exc
    except DataImportError as error:
        copy = pickle.loads(pickle.dumps(error))
    assert copy.__cause__ is None
    assert str(copy) == "contacts.csv: row 1: cannot write"


def test_every_error_class_of_the_tree_is_covered() -> None:
    tree = {
        cls
        for name in models.errors.__all__
        if isinstance(cls := getattr(models.errors, name), type) and issubclass(cls, RetainError)
    }
    covered = {type(e) for e in ERRORS}
    assert tree <= covered, f"add an instance of {sorted(c.__name__ for c in tree - covered)} to ERRORS"
