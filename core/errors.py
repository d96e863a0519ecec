"""The project's exception tree.

SignalEngineError
├── ConfigurationError     bad settings or arguments: reported to the user, never retried
├── TemporaryError         a lost connection or a rate limit: retried with backoff
│   ├── TemporaryExchangeError
│   └── TemporaryDatabaseError
└── ExchangeError          the exchange refused the request for good: stop and report
"""

from __future__ import annotations


class SignalEngineError(Exception):
    """Base of every error raised on purpose by SignalEngine."""


class ConfigurationError(SignalEngineError):
    """Bad settings or arguments; the CLI prints it and exits non-zero."""


class TemporaryError(SignalEngineError):
    """Worth retrying: callers back off and try again."""


class TemporaryExchangeError(TemporaryError):
    """Network trouble or rate limiting at the exchange; the collector reconnects."""


class TemporaryDatabaseError(TemporaryError):
    """The database connection dropped; the writer reconnects and the gap is backfilled."""


class ExchangeError(SignalEngineError):
    """The exchange rejected a request permanently (bad symbol, bad parameters)."""
