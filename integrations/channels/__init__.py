"""Channels out: email (SMTP), Slack, signed webhooks, CRM tasks and the file channel, each
behind the ``Channel`` protocol in ``base`` and listed once in ``registry``."""
