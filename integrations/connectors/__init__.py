"""Vendor connectors: a vendor's API read over httpx into the records the imports read."""

from integrations.connectors.stripe import (
    STRIPE_API,
    CustomerHistory,
    StripeClient,
    customer_record,
    records,
    revenue_rows,
)

__all__ = ["STRIPE_API", "CustomerHistory", "StripeClient", "customer_record", "records", "revenue_rows"]
