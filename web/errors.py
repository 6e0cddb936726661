"""Every domain error of the web tier, and the one map from them to HTTP: each is one line for
the client, never a stack trace. Modules raise these; only this module knows their status codes."""

from __future__ import annotations

import falcon

from runtime.messages import Result


class Unavailable(RuntimeError):
    """AWS could not take the request; the client may retry later."""


class Overloaded(Exception):
    """The queue holds more than the configured backlog; the client should come back later."""


class TooManyJobs(Exception):
    """A client past its JOB_RATE_PER_MIN: it may send the next job after `retry_after_s`."""

    def __init__(self, per_min: int, retry_after_s: int):
        super().__init__(f"more than {per_min} jobs a minute from this client")
        self.retry_after_s = retry_after_s


class RequestIdInUse(Exception):
    """A client-chosen request id that another submission holds: never taken over."""

    def __init__(self, request_id: str):
        super().__init__(f"request id {request_id} is already in use; GET /results/{request_id}")
        self.request_id = request_id


class ResultTimeout(Exception):
    def __init__(self, request_id: str, timeout_s: float):
        super().__init__(f"no result within {timeout_s:g} s; GET /results/{request_id} later")
        self.request_id = request_id


class ClassificationFailed(Exception):
    """The worker answered with an error (undecodable image, ...): the client's input is bad."""

    def __init__(self, result: Result):
        super().__init__(result.error)
        self.result = result


class ArchiveError(ValueError):
    """Not an archive this service reads, or one that breaks a whole-archive limit."""


class TooManyImages(ArchiveError):
    @classmethod
    def limit(cls, max_images: int, holder: str = "archive") -> TooManyImages:
        return cls(f"the {holder} holds more than the {max_images}-image limit of a job")


class JobRefused(ValueError):
    """A job request that cannot be taken as given (bad prefix, nothing to classify)."""


class PrefixNotAllowed(JobRefused):
    """A well-formed prefix the operator has not allowed (JOB_PREFIXES)."""


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


def _too_many_jobs(req, resp, error: TooManyJobs, params) -> None:
    raise falcon.HTTPTooManyRequests(
        description=f"{error}; retry later", retry_after=error.retry_after_s
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
    app.add_error_handler(TooManyJobs, _too_many_jobs)
    app.add_error_handler((ArchiveError, JobRefused), _bad_job)
    app.add_error_handler(RequestIdInUse, _in_use)
    app.set_error_serializer(serialize_error)
