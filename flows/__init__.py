"""Behaviour: the engine, analytics, reports, the Prefect layer and the demo."""

import logging

# a library logs, the application decides where it goes: without a handler of its own, Python would
# print warnings (a retry, a refused row) to stderr of every command
logging.getLogger(__name__).addHandler(logging.NullHandler())
