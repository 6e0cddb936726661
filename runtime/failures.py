"""Log a caught failure so that the line says what failed.

An AWS error's class name alone (ClientError) hides everything that matters: which call, which
error code, what AWS said. Everything else caught by a loop that must keep going is a bug or a
surprise, so its traceback is logged, once, with the one record that reports it.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError


def describe(error: BaseException) -> str:
    """`Operation: Code: message` for an AWS error; `Class: message` for anything else."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "?")
        message = details.get("Message", "") or str(error)
        return f"{error.operation_name}: {code}: {message}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def is_aws_error(error: BaseException) -> bool:
    return isinstance(error, ClientError | BotoCoreError)


def is_not_found(error: BaseException) -> bool:
    """An S3 object that is not there (GetObject says NoSuchKey, HeadObject a bare 404)."""
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in (
        "NoSuchKey",
        "404",
    )


# S3's answers to a conditional write whose key exists (412), or that lost a race (409).
_TAKEN = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


def is_taken(error: BaseException) -> bool:
    """A conditional S3 write (IfNoneMatch / IfMatch) refused: someone else's object is there."""
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in _TAKEN


def log_failure(log: logging.Logger, what: str, error: BaseException, then: str = "") -> None:
    """One warning for an AWS error (operation, code, message); one error with the traceback
    for anything unexpected. `then` says what happens next ("retry in 2.0 s")."""
    suffix = f"; {then}" if then else ""
    if is_aws_error(error):
        log.warning("%s failed (%s)%s", what, describe(error), suffix)
    else:
        log.error("%s failed unexpectedly (%s)%s", what, describe(error), suffix, exc_info=error)
