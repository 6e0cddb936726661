"""One log line per event, as text or as JSON, carrying the request id across the tiers.

A request id crosses the tiers only inside SQS message bodies, so that is where it is traced:
`trace_sqs` hooks a boto3 SQS client's documented event system (as OpenTelemetry's botocore
instrumentation does) and logs `request <id> queued / received / replied / reply received` for
every message the client sends or receives. No tier's domain code changes, and a grep for one id
(or a filter on the JSON `request_id` field) follows an upload from the web to a worker and back.

Only ids, delivery counts, labels and error reasons are read from a body: never image bytes, and
nothing here sees credentials.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar

from runtime.settings import LOG_FORMATS

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_MAX_REASON = 200

# The request the current thread is serving; the web binds it when the request is queued, so the
# line that answers it (and any error logged meanwhile) names the same id.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Stamp `request_id` on every record: the one passed in `extra`, else the thread's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, tier, logger, msg, request_id, plus fixed fields."""

    def __init__(self, fields: Mapping[str, str]):
        super().__init__()
        self._fields = dict(fields)

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            **self._fields,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            line["request_id"] = record.request_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def setup_logging(
    fmt: str, *, tier: str, level: int = logging.INFO, fields: Mapping[str, str] | None = None
) -> None:
    """Configure the root logger once per process (instead of logging.basicConfig)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {'|'.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter({"tier": tier, **(fields or {})}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings become log lines too, in the same format


def trace_sqs(sqs, log: logging.Logger) -> None:
    """Log one line per request id for every message this SQS client sends or receives."""
    events = sqs.meta.events
    events.register("before-parameter-build.sqs.SendMessage", _remember_one)
    events.register("before-parameter-build.sqs.SendMessageBatch", _remember_batch)
    events.register("after-call.sqs.SendMessage", lambda **kw: _log_sent(log, **kw))
    events.register("after-call.sqs.SendMessageBatch", lambda **kw: _log_sent(log, **kw))
    events.register("after-call.sqs.ReceiveMessage", lambda **kw: _log_received(log, **kw))


def _remember_one(params, context, **_):
    context["traced"] = [(None, _summary(params.get("MessageBody", "")))]


def _remember_batch(params, context, **_):
    context["traced"] = [
        (entry.get("Id"), _summary(entry.get("MessageBody", ""))) for entry in params["Entries"]
    ]


def _log_sent(log: logging.Logger, http_response, parsed, context, **_):
    if http_response.status_code >= 300:
        return  # boto3 raises to the caller, whose own line says what failed
    # A batch reports which entries SQS took; a single send either took its one message or raised.
    taken = {entry.get("Id") for entry in parsed.get("Successful", [])} | {None}
    for entry_id, summary in context.get("traced", []):
        if summary is None or entry_id not in taken:
            continue
        request_id, kind, detail = summary
        if kind == "request":
            current_request_id.set(request_id)
            log.info("request %s queued", request_id, extra={"request_id": request_id})
        else:
            log.info("request %s replied %s", request_id, detail, extra={"request_id": request_id})


def _log_received(log: logging.Logger, http_response, parsed, **_):
    if http_response.status_code >= 300:
        return
    for message in parsed.get("Messages", []):
        summary = _summary(message.get("Body", ""))
        if summary is None:
            continue
        request_id, kind, detail = summary
        if kind == "request":
            count = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            log.info(
                "request %s received (delivery %s)",
                request_id,
                count,
                extra={"request_id": request_id},
            )
        else:
            extra = {"request_id": request_id}
            log.info("request %s reply received: %s", request_id, detail, extra=extra)


def _summary(body: str) -> tuple[str, str, str] | None:
    """(id, 'request' | 'result', detail) from a message body; None if it is not ours."""
    try:
        obj = json.loads(body)
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return None
    request_id = obj["id"][:64]
    if "reply_to" in obj:
        return request_id, "request", ""
    error = obj.get("error")
    if error:
        return request_id, "result", f"error: {str(error)[:_MAX_REASON]}"
    return request_id, "result", f"ok: {str(obj.get('label', ''))[:_MAX_REASON]}"
