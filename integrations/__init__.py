"""The outside world: ``channels`` out (email, Slack, webhooks, CRM, files) and ``sources`` in
(CSV imports of accounts, contacts, revenue and suppression lists)."""

import logging

# a library logs, the application decides where it goes: without a handler of its own, Python would
# print warnings (a retry, a refused row) to stderr of every command
logging.getLogger(__name__).addHandler(logging.NullHandler())
