"""Sources in: CSV imports of accounts and contacts, billing exports (revenue), suppression lists,
usage, support tickets and product events (CSV or JSON Lines), and replies logged by hand, all
read by one reader (:func:`read_csv`, or JSON Lines through it), all or nothing, with row-numbered
errors.

Code outside this package imports from here, never from the modules inside it.
"""

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
)
from integrations.sources.activity import (
    LandResult,
    TicketRecord,
    UsageDay,
    import_tickets,
    import_usage,
    land_tickets,
    land_usage,
)
from integrations.sources.billing import (
    BillingColumns,
    RevenueImportResult,
    Spread,
    import_revenue,
    parse_money,
    spread_cents,
)
from integrations.sources.events import EventRecord, EventsResult, activation_event, import_events, land_events
from integrations.sources.replies import ReplyResult, mark_replied
from integrations.sources.suppression import (
    SuppressionResult,
    apply_suppressions,
    import_suppression_list,
    unsubscribe,
)
from integrations.sources.sync_state import (
    SourceStatus,
    commit_batch,
    finish_run,
    read_cursor,
    start_run,
    sync_status,
)

__all__ = [
    "ACCOUNT_COLUMNS",
    "CHUNK",
    "CONTACT_COLUMNS",
    "BillingColumns",
    "CsvFile",
    "CsvRecord",
    "EventRecord",
    "EventsResult",
    "ImportResult",
    "LandResult",
    "ReplyResult",
    "RevenueImportResult",
    "SourceStatus",
    "Spread",
    "SuppressionResult",
    "TicketRecord",
    "UsageDay",
    "activation_event",
    "apply_suppressions",
    "chunks",
    "column_key",
    "commit_batch",
    "describe_changes",
    "finish_run",
    "flag_duplicates",
    "import_accounts",
    "import_contacts",
    "import_event",
    "import_events",
    "import_revenue",
    "import_suppression_list",
    "import_tickets",
    "import_usage",
    "json_safe",
    "land_events",
    "land_tickets",
    "land_usage",
    "mark_replied",
    "parse_date",
    "parse_email",
    "parse_money",
    "parse_timestamp",
    "quote_cell",
    "read_csv",
    "read_cursor",
    "settle_problems",
    "spread_cents",
    "start_run",
    "sync_status",
    "unsubscribe",
    "update_in_batches",
    "validate_rows",
    "write_all_or_nothing",
]
