"""Sources in: CSV imports of accounts and contacts, billing exports (revenue) and suppression
lists, all read by one CSV reader, all or nothing, with row-numbered errors."""
