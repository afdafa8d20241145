"""Errors from the Kubernetes API, typed by what the caller does about them.

Every error carries the API server's own `message`, so "what was wrong" reaches the
person who sent the object (a CEL rule's message, a schema path, a conflict reason).

ApiError               an answer we do not map below (status, reason, message)
├── NotFound           404: absent — create it, or treat it as empty
├── Conflict           409: someone wrote first (or it already exists) — re-read, re-decide
├── Gone               410: the resourceVersion is too old to watch from — list again
├── Invalid            422: the object failed validation; `message` says what is wrong
├── TooManyRequests    429: not processed (storage initialising, rate limit); retry later
└── Unavailable        no definite answer: unreachable, timed out, or a 5xx. A write that
                       ends this way may or may not have been applied.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: the object changed since it was read (or already exists)."""


class Gone(ApiError):
    """410: the resourceVersion asked for has been compacted away."""


class Invalid(ApiError):
    """422: the object failed validation; `message` says what is wrong."""


class TooManyRequests(ApiError):
    """429: the server did not process the request; `retry_after_s` is its advice."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(status, reason, message)
        self.retry_after_s = retry_after_s


class Unavailable(ApiError):
    """No definite answer from the API server (connection, timeout, 5xx)."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 410: Gone, 422: Invalid}


def error_for(status: int, reason: str, message: str, retry_after_s: float = 1.0) -> ApiError:
    """The typed error for an HTTP status (or a watch ERROR event's Status code)."""
    if status == 429:
        return TooManyRequests(status, reason, message, retry_after_s)
    if status >= 500:
        return Unavailable(status, reason, message)
    return _BY_STATUS.get(status, ApiError)(status, reason, message)
