"""The outside world: ``channels`` out (email, Slack, webhooks, CRM, files) and ``sources`` in
(CSV imports of accounts, contacts, revenue and suppression lists)."""
