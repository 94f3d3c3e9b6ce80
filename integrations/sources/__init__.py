"""Sources in: CSV imports of accounts and contacts, billing exports (revenue) and suppression
lists, all read by one CSV reader (:func:`read_csv`), all or nothing, with row-numbered errors.

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
from integrations.sources.billing import (
    BillingColumns,
    RevenueImportResult,
    Spread,
    import_revenue,
    parse_money,
    spread_cents,
)
from integrations.sources.suppression import (
    SuppressionResult,
    apply_suppressions,
    import_suppression_list,
    unsubscribe,
)

__all__ = [
    "ACCOUNT_COLUMNS",
    "CHUNK",
    "CONTACT_COLUMNS",
    "BillingColumns",
    "CsvFile",
    "CsvRecord",
    "ImportResult",
    "RevenueImportResult",
    "Spread",
    "SuppressionResult",
    "apply_suppressions",
    "chunks",
    "column_key",
    "describe_changes",
    "flag_duplicates",
    "import_accounts",
    "import_contacts",
    "import_event",
    "import_revenue",
    "import_suppression_list",
    "json_safe",
    "parse_date",
    "parse_email",
    "parse_money",
    "quote_cell",
    "read_csv",
    "settle_problems",
    "spread_cents",
    "unsubscribe",
    "update_in_batches",
    "validate_rows",
    "write_all_or_nothing",
]
