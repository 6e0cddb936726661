"""Domain errors mapped to HTTP in one place; every error is one line, never a stack trace."""

from __future__ import annotations

import falcon

from web.archives import ArchiveError, TooManyImages
from web.dispatcher import RequestIdInUse
from web.gateway import ClassificationFailed, ResultTimeout
from web.guards import Overloaded
from web.jobs import JobRefused, PrefixNotAllowed
from web.store import Unavailable


def _timeout(req, resp, error: ResultTimeout, params) -> None:
    raise falcon.HTTPGatewayTimeout(description=str(error)) from None


def _failed(req, resp, error: ClassificationFailed, params) -> None:
    raise falcon.HTTPUnprocessableEntity(description=error.result.error) from None


def _unavailable(req, resp, error: Unavailable, params) -> None:
    raise falcon.HTTPServiceUnavailable(description=str(error), retry_after=2) from None


def _in_use(req, resp, error: RequestIdInUse, params) -> None:
    raise falcon.HTTPConflict(description=str(error)) from None


def _overloaded(req, resp, error: Overloaded, params) -> None:
    raise falcon.HTTPServiceUnavailable(
        description=f"too busy: {error}; retry later", retry_after=5
    ) from None


def _bad_job(req, resp, error: ArchiveError | JobRefused, params) -> None:
    if isinstance(error, TooManyImages):
        raise falcon.HTTPContentTooLarge(description=str(error)) from None
    if isinstance(error, PrefixNotAllowed):
        raise falcon.HTTPForbidden(description=str(error)) from None
    raise falcon.HTTPBadRequest(description=str(error)) from None


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """JSON for clients that ask for it, else the one-line reason as plain text."""
    reason = error.description or error.title
    if req.client_prefers(["text/plain", "application/json"]) == "application/json":
        resp.media = {"error": error.title, "reason": reason}
    else:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"{error.title}: {reason}\n" if error.description else f"{reason}\n"


def install(app: falcon.App) -> None:
    # Anything else is Falcon's default: logged, and a bare 500 with no traceback.
    app.add_error_handler(ResultTimeout, _timeout)
    app.add_error_handler(ClassificationFailed, _failed)
    app.add_error_handler(Unavailable, _unavailable)
    app.add_error_handler(Overloaded, _overloaded)
    app.add_error_handler((ArchiveError, JobRefused), _bad_job)
    app.add_error_handler(RequestIdInUse, _in_use)
    app.set_error_serializer(serialize_error)
