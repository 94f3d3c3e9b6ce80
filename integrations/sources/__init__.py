"""Sources in: CSV imports of accounts and contacts, billing exports (revenue), suppression lists,
usage, support tickets and product events (CSV or JSON Lines), and replies logged by hand or read
from a mailbox (IMAP). Files are read by one reader (:func:`read_csv`, or JSON Lines through it),
all or nothing, with row-numbered errors.

Code outside this package imports from here, never from the modules inside it. A module here is
imported when one of its names is first used, not with the package: a play or a tick that asks
for the approvals' names does not load the importers of CSV files, billing, events or mailboxes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integrations.sources._batches import (
        CHUNK,
        chunks,
        describe_changes,
        import_event,
        json_safe,
        update_in_batches,
        write_all_or_nothing,
    )
    from integrations.sources._csv import (
        CsvFile,
        CsvRecord,
        column_key,
        flag_duplicates,
        parse_date,
        parse_email,
        parse_timestamp,
        quote_cell,
        read_csv,
        settle_problems,
        validate_rows,
    )
    from integrations.sources.accounts import (
        ACCOUNT_COLUMNS,
        CONTACT_COLUMNS,
        ImportResult,
        import_accounts,
        import_contacts,
        land_accounts,
        land_contacts,
    )
    from integrations.sources.activity import (
        LandResult,
        TicketRecord,
        UsageDay,
        import_tickets,
        import_usage,
        land_tickets,
        land_usage,
        ticket_records,
        usage_days,
    )
    from integrations.sources.approvals import (
        ANY_CSM,
        APPROVALS_LINK_DAYS,
        DraftLine,
        approvals_link,
        approve_draft,
        csm_of_approvals_token,
        decided_line,
        draft_of,
        list_drafts,
        may_decide,
        recipient,
        record_decision,
        reject_draft,
        show_draft,
    )
    from integrations.sources.billing import (
        BillingColumns,
        RevenueImportResult,
        Spread,
        import_revenue,
        land_revenue,
        parse_money,
        revenue_of,
        spread_cents,
    )
    from integrations.sources.events import (
        EventRecord,
        EventsResult,
        event_records,
        import_events,
        land_calls,
        land_events,
    )
    from integrations.sources.mailbox import (
        Answer,
        Mailbox,
        PollResult,
        automatic_reason,
        configured_mailbox,
        imap_utf7,
        parse_mailbox_url,
        poll_mailbox,
        read_answer,
        record_inbound,
        team_addresses,
    )
    from integrations.sources.provider_events import (
        EVENT_KINDS,
        ProviderEventRecord,
        ProviderEventsResult,
        land_provider_events,
    )
    from integrations.sources.replies import ReplyResult, mark_replied, set_replied
    from integrations.sources.suppression import (
        CHANNELS,
        PROVIDER_SOURCES,
        ResubscribeResult,
        SuppressionResult,
        apply_suppressions,
        import_suppression_list,
        resubscribe,
        resubscribe_addresses,
        suppress_address,
        suppression_of,
        unsubscribe,
    )
    from integrations.sources.sync_state import (
        SourceStatus,
        commit_batch,
        finish_run,
        forget_cursor,
        read_cursor,
        start_run,
        sync_status,
    )

#: the names of each module, which is imported when one of them is first used
_EXPORTS: dict[str, str] = {
    "_batches": "CHUNK chunks describe_changes import_event json_safe update_in_batches write_all_or_nothing",
    "_csv": (
        "CsvFile CsvRecord column_key flag_duplicates parse_date parse_email parse_timestamp quote_cell read_csv "
        "settle_problems validate_rows"
    ),
    "accounts": (
        "ACCOUNT_COLUMNS CONTACT_COLUMNS ImportResult import_accounts import_contacts land_accounts land_contacts"
    ),
    "activity": (
        "LandResult TicketRecord UsageDay import_tickets import_usage land_tickets land_usage ticket_records usage_days"
    ),
    "approvals": (
        "ANY_CSM APPROVALS_LINK_DAYS DraftLine approvals_link approve_draft csm_of_approvals_token decided_line "
        "draft_of list_drafts may_decide recipient record_decision reject_draft show_draft"
    ),
    "billing": (
        "BillingColumns RevenueImportResult Spread import_revenue land_revenue parse_money revenue_of spread_cents"
    ),
    "events": "EventRecord EventsResult event_records import_events land_calls land_events",
    "mailbox": (
        "Answer Mailbox PollResult automatic_reason configured_mailbox imap_utf7 parse_mailbox_url poll_mailbox "
        "read_answer record_inbound team_addresses"
    ),
    "provider_events": "EVENT_KINDS ProviderEventRecord ProviderEventsResult land_provider_events",
    "replies": "ReplyResult mark_replied set_replied",
    "suppression": (
        "CHANNELS PROVIDER_SOURCES ResubscribeResult SuppressionResult apply_suppressions import_suppression_list "
        "resubscribe resubscribe_addresses suppress_address suppression_of unsubscribe"
    ),
    "sync_state": "SourceStatus commit_batch finish_run forget_cursor read_cursor start_run sync_status",
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names.split()}

__all__ = [
    "ACCOUNT_COLUMNS",
    "ANY_CSM",
    "APPROVALS_LINK_DAYS",
    "CHANNELS",
    "CHUNK",
    "CONTACT_COLUMNS",
    "EVENT_KINDS",
    "PROVIDER_SOURCES",
    "Answer",
    "BillingColumns",
    "CsvFile",
    "CsvRecord",
    "DraftLine",
    "EventRecord",
    "EventsResult",
    "ImportResult",
    "LandResult",
    "Mailbox",
    "PollResult",
    "ProviderEventRecord",
    "ProviderEventsResult",
    "ReplyResult",
    "ResubscribeResult",
    "RevenueImportResult",
    "SourceStatus",
    "Spread",
    "SuppressionResult",
    "TicketRecord",
    "UsageDay",
    "apply_suppressions",
    "approvals_link",
    "approve_draft",
    "automatic_reason",
    "chunks",
    "column_key",
    "commit_batch",
    "configured_mailbox",
    "csm_of_approvals_token",
    "decided_line",
    "describe_changes",
    "draft_of",
    "event_records",
    "finish_run",
    "flag_duplicates",
    "forget_cursor",
    "imap_utf7",
    "import_accounts",
    "import_contacts",
    "import_event",
    "import_events",
    "import_revenue",
    "import_suppression_list",
    "import_tickets",
    "import_usage",
    "json_safe",
    "land_accounts",
    "land_calls",
    "land_contacts",
    "land_events",
    "land_provider_events",
    "land_revenue",
    "land_tickets",
    "land_usage",
    "list_drafts",
    "mark_replied",
    "may_decide",
    "parse_date",
    "parse_email",
    "parse_mailbox_url",
    "parse_money",
    "parse_timestamp",
    "poll_mailbox",
    "quote_cell",
    "read_answer",
    "read_csv",
    "read_cursor",
    "recipient",
    "record_decision",
    "record_inbound",
    "reject_draft",
    "resubscribe",
    "resubscribe_addresses",
    "revenue_of",
    "set_replied",
    "settle_problems",
    "show_draft",
    "spread_cents",
    "start_run",
    "suppress_address",
    "suppression_of",
    "sync_status",
    "team_addresses",
    "ticket_records",
    "unsubscribe",
    "update_in_batches",
    "usage_days",
    "validate_rows",
    "write_all_or_nothing",
]


if not TYPE_CHECKING:  # (for mypy, the names are the imports above, and no other name exists)

    def __getattr__(name: str) -> Any:
        module = _HOME.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
