"""Errors every part of fedsurv raises for a user to read (one clear sentence each)."""


class FedsurvError(Exception):
    """An error a user can act on; the CLI prints its message without a traceback."""


class DataError(FedsurvError):
    """Site data that cannot be used: the message names the file, rows and column."""


class RefusedError(FedsurvError):
    """A query a site's policy (or a failed check) refused; the message says why."""


class AggregationError(FedsurvError):
    """Replies that do not sum to a consistent aggregate; no estimate is produced."""
