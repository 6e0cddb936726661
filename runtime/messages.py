"""The messages that cross the queues, as frozen dataclasses with one decode error.

Everything read from a queue is untrusted: decode() checks the version, every field's type and
that a reply-to address belongs to this deployment before a tier acts on it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import secrets
import unicodedata
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, field

from runtime.keys import is_under, job_item_key, result_key, staged_key, upload_key

VERSION = 1
# fullmatch, not ^...$: "$" also matches before a trailing newline.
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
MAX_FILENAME = 255
# A model's name as uploads, messages, results and cache keys carry it (a MODELS entry's NAME,
# a package's manifest name): one path segment of a cache key, so no '/' and no leading dot.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# What the worker's decoders read, by lowercase format name (Pillow's names, lowered). Here,
# not in worker/imaging.py, so the web tier checks uploads against it without importing torch.
IMAGE_FORMATS = frozenset({"jpeg", "png", "webp", "gif", "bmp", "tiff"})


def printable_name(raw: str) -> str:
    """A filename as messages, results and CSVs carry it: no control characters (a newline, an
    escape, a NUL), at most MAX_FILENAME characters. The raw name is cut first, so a name as long
    as its source allows costs nothing."""
    raw = raw[: 4 * MAX_FILENAME]
    return "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")[:MAX_FILENAME]


def is_request_id(value: object) -> bool:
    """32 lowercase hex digits, nothing before or after."""
    return isinstance(value, str) and REQUEST_ID.fullmatch(value) is not None


def is_model_name(value: object) -> bool:
    return isinstance(value, str) and MODEL_NAME.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


class MessageError(ValueError):
    """A message body that is not a valid message of this schema."""


def _require(obj: dict, name: str, kind: type | tuple[type, ...]):
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MessageError(f"field {name!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


# SQS bodies are at most 256 KiB here (1 MiB on AWS since 2025); our messages are a few hundred
# bytes and four levels deep, a request with its upload inline at most INLINE_MAX_BYTES * 4/3
# more (runtime.settings caps that at 150 KiB, 200 KiB of base64).
MAX_BODY_CHARS = 256 * 1024
MAX_DEPTH = 8


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


def load_json(body: str) -> dict:
    """A JSON object from an untrusted body, bounded in size and depth; MessageError otherwise.

    Why bounded: a number like 10**400, or 200k nested brackets, raises Overflow- or
    RecursionError rather than ValueError, which would escape every `except MessageError`.
    """
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise MessageError("body is not text or longer than a message can be")
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise MessageError("body is not JSON (or nested too deep)") from None
    if not isinstance(obj, dict):
        raise MessageError("body is not a JSON object")
    _check_depth(obj)
    return obj


def _check_depth(obj: object) -> None:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MessageError(f"body is nested more than {MAX_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            stack.extend((child, depth + 1) for child in children)


def _load(body: str) -> dict:
    obj = load_json(body)
    if obj.get("v") != VERSION:
        raise MessageError(f"unknown message version {obj.get('v')!r}")
    return obj


def _finite(value: float, name: str) -> float:
    try:
        number = float(value)
    except OverflowError:
        raise MessageError(f"field {name!r} is out of range") from None
    if not math.isfinite(number):
        raise MessageError(f"field {name!r} is not finite")
    return number


def new_token() -> str:
    """A fresh secret that binds one submission to its reply (see Request.token)."""
    return secrets.token_hex(16)


def _optional_hex(obj: dict, name: str, digits: int = 32) -> str:
    value = obj.get(name, "")
    if not isinstance(value, str) or value and not re.fullmatch(f"[0-9a-f]{{{digits}}}", value):
        raise MessageError(f"field {name!r} is not {digits} hex digits")
    return value


def _optional_base64(obj: dict, name: str) -> str:
    # Checked here, so that a bad field fails the message (answered "bad request"), never the
    # worker's fetch; the size is already bounded by MAX_BODY_CHARS.
    value = obj.get(name, "")
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise MessageError(f"field {name!r} is not base64") from None
    return value


def _optional_model(obj: dict) -> str:
    value = obj.get("model", "")
    if value != "" and not is_model_name(value):
        raise MessageError("field 'model' is not a model name")
    return value


def _check_id(value: str) -> str:
    if not is_request_id(value):
        raise MessageError("id is not a 32-digit hex request id")
    return value


@dataclass(frozen=True)
class Request:
    """Web -> worker: classify the object `key` of the input bucket and reply to `reply_to`.

    Three kinds share the one schema: an interactive upload (a reply queue waits), an
    asynchronous upload (`reply_to` empty: the stored result is the answer) and one image of a
    batch job (`job` set: the result goes under the job's prefix, never replied).
    """

    id: str
    key: str
    filename: str
    reply_to: str
    deadline: float  # epoch seconds; past it nobody waits for the answer
    job: str = ""  # the batch job's id, for a job image
    index: int = 0  # the image's place in its job
    # A per-submission secret the worker echoes in its Result: the web tier hands a reply only
    # to the submission that carries the same token, never to another one that reused the id.
    token: str = ""
    # A small upload's own bytes, base64 (see INLINE_MAX_BYTES): the worker classifies them
    # without a GET. The object under `key` is stored all the same; "" for every other request.
    inline: str = ""
    # The model asked for by name (MODELS); "" for the deployment's default (MODEL).
    model: str = ""
    v: int = VERSION

    @property
    def is_async(self) -> bool:
        return not self.reply_to and not self.job

    @classmethod
    def create(
        cls,
        request_id: str,
        filename: str,
        reply_to: str,
        deadline: float,
        token: str = "",
        model: str = "",
    ) -> Request:
        """A request for an upload stored under its id's key."""
        return cls(
            id=request_id,
            key=upload_key(request_id),
            filename=filename,
            reply_to=reply_to,
            deadline=deadline,
            token=token,
            model=model,
        )

    def with_inline(self, data: bytes, max_bytes: int) -> Request:
        """This request as sent for `data`, the bytes already stored under its key: carrying
        them inline when they are at most `max_bytes` (INLINE_MAX_BYTES), else unchanged."""
        if len(data) > max_bytes:
            return self
        return dataclasses.replace(self, inline=base64.b64encode(data).decode("ascii"))

    def inline_bytes(self) -> bytes | None:
        """The bytes carried inline, or None when the worker must GET `key`."""
        return base64.b64decode(self.inline, validate=True) if self.inline else None

    def encode(self) -> str:
        fields = asdict(self)
        for name in ("inline", "model"):
            if not fields[name]:
                del fields[name]  # the common case stays as short as it was
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def decode(
        cls, body: str, reply_prefix: str | None = None, job_prefixes: tuple[str, ...] = ()
    ) -> Request:
        """`reply_prefix`: the URL every reply queue starts with (reply_url_prefix);
        `job_prefixes`: where a job image may lie besides its job's own staged inputs
        (Settings.job_source_prefixes)."""
        obj = _load(body)
        request = cls(
            id=_check_id(_require(obj, "id", str)),
            key=_require(obj, "key", str),
            filename=_require(obj, "filename", str)[:MAX_FILENAME],
            reply_to=_require(obj, "reply_to", str),
            deadline=_finite(_require(obj, "deadline", (int, float)), "deadline"),
            token=_optional_hex(obj, "token"),
            job=obj.get("job") or "",
            index=obj.get("index", 0),
            inline=_optional_base64(obj, "inline"),
            model=_optional_model(obj),
        )
        if request.job:
            _check_job_item(request, job_prefixes)
        elif request.key != upload_key(request.id):
            raise MessageError("key does not belong to the request id")
        if request.reply_to and reply_prefix is not None:
            own = own_reply_queue(request.reply_to, reply_prefix)
            if own is None:
                raise MessageError("reply_to is not one of this deployment's reply queues")
            request = dataclasses.replace(request, reply_to=own)
        return request


def _check_job_item(request: Request, job_prefixes: tuple[str, ...]) -> None:
    if not isinstance(request.job, str) or not is_request_id(request.job):
        raise MessageError("job is not a 32-digit hex job id")
    if not isinstance(request.index, int) or isinstance(request.index, bool) or request.index < 0:
        raise MessageError("index is not a non-negative integer")
    if request.reply_to:
        raise MessageError("a job image has no reply_to")
    # Only its own staged image or an operator's allowed prefix: never another job's inputs,
    # an upload or anything else of the bucket.
    if request.key != staged_key(request.job, request.index) and not is_under(
        request.key, job_prefixes
    ):
        raise MessageError("key is neither the job's staged input nor under an allowed prefix")


def stored_key(request: Request, ok: bool) -> str:
    """Where the worker stores a request's result: by job and index, or by request id."""
    return job_item_key(request.job, request.index, ok) if request.job else result_key(request.id)


def salvage(body: str, reply_prefix: str) -> Request | None:
    """From a body that fails decode(), a request with a sound id and an own reply queue or a
    sound job and index (so the sender can be told why: a reply, an error at the id, a failed
    row of the job), or None when there is nobody safe to tell. Its key is never read."""
    try:
        obj = load_json(body)
        filename = str(obj.get("filename", ""))[:MAX_FILENAME]
        if job := obj.get("job"):
            index = obj.get("index", 0)
            request = Request(
                id=obj["id"],
                key=staged_key(job, index),  # what decode() accepts for a job image
                filename=filename,
                reply_to="",
                deadline=0,
                job=job,
                index=index,
            )
        else:
            request = Request.create(
                request_id=obj["id"],
                filename=filename,
                reply_to=obj["reply_to"],
                deadline=0,
                token=obj.get("token", ""),  # so the error reaches the client that waits
            )
        return Request.decode(request.encode(), reply_prefix=reply_prefix)
    except (ValueError, KeyError, TypeError):  # MessageError is a ValueError
        return None


def reply_url_prefix(request_queue_url: str, name_prefix: str) -> str:
    """What every reply queue URL of this deployment starts with: the request queue's own
    endpoint and account, then the reply queues' name prefix."""
    return request_queue_url.rsplit("/", 1)[0] + "/" + name_prefix


_QUEUE_NAME_TAIL = re.compile(r"[A-Za-z0-9_-]{1,80}")


def own_reply_queue(url: str, url_prefix: str) -> str | None:
    """The reply queue `url` names, as a URL on this worker's own endpoint; None if it is not
    one of this deployment's: exactly /<this account>/<prefix><name chars> over http(s).

    The host is not trusted but replaced: a reply only ever goes to this endpoint, whatever
    host the message names (a web tier may reach the same SQS by another address, as a
    container on another network does), so no message can send a result anywhere else."""
    own_base, _, own_prefix = url_prefix.rpartition("/")
    own_path = urllib.parse.urlsplit(own_base).path  # /<account>
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.query or parts.fragment or not own_path:
        return None
    account_path, _, name = parts.path.rpartition("/")
    if account_path != own_path or not name.startswith(own_prefix):
        return None
    if _QUEUE_NAME_TAIL.fullmatch(name[len(own_prefix) :]) is None:
        return None
    return f"{own_base}/{name}"


@dataclass(frozen=True)
class Result:
    """Worker -> web (and the output bucket): a label, or an error with its reason."""

    id: str
    filename: str
    model: str = ""
    version: str = ""  # of the model that answered (its package's manifest version)
    label: str = ""
    top5: list[dict] = field(default_factory=list)
    error: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    token: str = ""  # the Request's token, echoed
    # SHA-256 of the bytes the worker classified: the web tier caches a result under this hash
    # only, never under the hash of what it believes it uploaded.
    sha256: str = ""
    instance: str = ""  # the worker instance that classified it
    v: int = VERSION

    @property
    def ok(self) -> bool:
        return not self.error

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, body: str) -> Result:
        obj = _load(body)
        top5 = obj.get("top5", [])
        timings = obj.get("timings_ms", {})
        if not isinstance(top5, list) or not isinstance(timings, dict):
            raise MessageError("top5 or timings_ms has the wrong type")
        return cls(
            id=_check_id(_require(obj, "id", str)),
            filename=_require(obj, "filename", str),
            model=obj.get("model", "") or "",
            version=obj.get("version", "") or "",
            label=obj.get("label", "") or "",
            top5=top5,
            error=obj.get("error", "") or "",
            timings_ms=timings,
            token=_optional_hex(obj, "token"),
            sha256=_optional_hex(obj, "sha256", 64),
            instance=obj.get("instance", "") or "",
        )
