"""Checks a request passes before any work: the optional API key, the backlog limits, the job
rate, the upload memory budget, and the upload itself (run as a Falcon hook before the
responder sees anything).

The client's filename and Content-Type are never trusted: the format is sniffed from the bytes,
and the filename is reduced to a display name that shapes no key or path.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import falcon
from PIL import Image, UnidentifiedImageError

from runtime import sqs
from runtime.budget import ByteBudget
from runtime.failures import log_failure
from runtime.messages import IMAGE_FORMATS, MAX_FILENAME, printable_name
from runtime.pixels import footprint, limit_bytes
from web.errors import Overloaded, TooManyJobs

log = logging.getLogger(__name__)


class ApiKeyRequired:
    """Falcon middleware: with an API key set, every route needs it but the few declared open.

    A route added later is closed by default; nothing has to remember to guard it. The key is
    checked after routing and before any responder or hook reads the body.
    """

    # GET (and HEAD) of these stay open: the health check, the page and its static files.
    OPEN_TEMPLATES = frozenset({"/healthz", "/"})
    OPEN_PREFIXES = ("/static/",)
    OPEN_METHODS = frozenset({"GET", "HEAD"})

    def __init__(self, api_key: str):
        self._expected = api_key.encode()

    def is_open(self, req: falcon.Request) -> bool:
        if req.method not in self.OPEN_METHODS:
            return False
        return req.uri_template in self.OPEN_TEMPLATES or req.path.startswith(self.OPEN_PREFIXES)

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        if not self._expected or self.is_open(req):
            return
        if not key_matches(
            self._expected, req.get_header("X-Api-Key"), req.get_header("Authorization")
        ):
            raise falcon.HTTPUnauthorized(
                description="missing or wrong API key (X-Api-Key header)",
                challenges=["Bearer"],
            )


def key_matches(expected: bytes, api_key_header: str | None, authorization: str | None) -> bool:
    """Whether the request presents `expected` in X-Api-Key or as a Bearer token."""
    given = (api_key_header or "").encode()
    bearer = authorization or ""
    if bearer.startswith("Bearer "):  # how Prometheus sends it
        given = bearer[7:].encode()
    # Constant time, so the key cannot be guessed byte by byte from response times.
    return hmac.compare_digest(given, expected)


class Backlog:
    """The request queue's depth, read at most once per `ttl_s` however many uploads ask."""

    def __init__(
        self,
        sqs,
        queue_url: str,
        limit: int,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        what: str = "requests",
    ):
        self._sqs, self._queue_url, self._limit = sqs, queue_url, limit
        self._what = what  # what the queue holds, for the refusal
        self._ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._depth = 0

    def check(self) -> None:
        if self._limit and self.depth() > self._limit:
            raise Overloaded(f"{self._depth} {self._what} are waiting (limit {self._limit})")

    def depth(self) -> int:
        with self._lock:
            if self._clock() - self._read_at >= self._ttl_s:
                self._read_at = self._clock()
                try:
                    self._depth = sqs.read_visible(self._sqs, self._queue_url)
                except Exception as error:  # noqa: BLE001 - unknown depth: let the enqueue decide
                    log_failure(log, "read the backlog", error, "keeping the last depth")
            return self._depth


class JobRate:
    """At most `per_min` POST /jobs a minute per client (JOB_RATE_PER_MIN), a token bucket each:
    one client cannot queue job after job and hold the fleet. A client is the API key it
    presents (hashed: no key is kept), or its address when it presents none."""

    _MAX_CLIENTS = 10_000  # past this many buckets, those already full again are forgotten

    def __init__(self, per_min: int, clock: Callable[[], float] = time.monotonic):
        self._per_min, self._clock = per_min, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, req: falcon.Request) -> None:
        if not self._per_min:
            return
        client, now, rate_s = _client(req), self._clock(), self._per_min / 60.0
        with self._lock:
            tokens, at = self._buckets.get(client, (float(self._per_min), now))
            tokens = min(float(self._per_min), tokens + (now - at) * rate_s)
            if tokens < 1:
                raise TooManyJobs(self._per_min, math.ceil((1 - tokens) / rate_s))
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self._MAX_CLIENTS:
                self._forget_full(now, rate_s)

    def give_back(self, req: falcon.Request) -> None:
        """A request that created no job (refused, or AWS failed) does not count: only jobs
        queue work."""
        if not self._per_min:
            return
        client = _client(req)
        with self._lock:
            if client in self._buckets:
                tokens, at = self._buckets[client]
                self._buckets[client] = (min(float(self._per_min), tokens + 1), at)

    def _forget_full(self, now: float, rate_s: float) -> None:
        self._buckets = {
            client: (tokens, at)
            for client, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * rate_s < self._per_min
        }


def _client(req: falcon.Request) -> str:
    key = req.get_header("X-Api-Key") or req.get_header("Authorization") or ""
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"addr:{req.remote_addr}"


class UploadMemory:
    """Bytes of upload bodies the app holds at once, at most `limit_bytes`.

    Waitress spools bodies to disk; the app reads each into memory to check and store it and
    keeps it while the client waits for its label. Without a bound 200 uploads of 10 MB took
    the process to 1.6 GB. An upload reserves its Content-Length before its body is read and
    gives it back when answered (this is also Falcon middleware); one that cannot get it
    within `wait_s` is told the service is too busy. One upload larger than the whole limit
    proceeds alone.
    """

    def __init__(self, limit_bytes: int, wait_s: float):
        self.limit_bytes, self._wait_s = limit_bytes, wait_s
        self._bytes = ByteBudget(limit_bytes)

    def take(self, req: falcon.Request, size: int) -> None:
        if not self._bytes.acquire(size, self._wait_s):
            raise Overloaded(f"{self._bytes.held // 2**20} MiB of uploads in hand")
        req.context.held_bytes = size

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        size = req.context.get("held_bytes", 0)
        if size:
            req.context.held_bytes = 0
            self._bytes.release(size)


# The upload ------------------------------------------------------------------------------

FIELDS = ("myfile", "inputFile")  # the two generations of the course's workload generators
MODEL_FIELD = "model"  # a form field or query parameter naming one of the deployment's models
MULTIPART_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str  # display name, already cleaned
    format: str
    sha256: str
    model: str = ""  # the model asked for (one of MODELS), or "" for the default

    @property
    def stem(self) -> str:
        return self.filename.rsplit(".", 1)[0] if "." in self.filename[1:] else self.filename


def clean_filename(raw: str | None) -> str:
    """A display name: the last path part, no control characters, bounded length."""
    name = printable_name((raw or "")[-4 * MAX_FILENAME :].replace("\\", "/").rsplit("/", 1)[-1])
    return name.strip().lstrip(".") or "upload"


def make_validator(
    max_upload_bytes: int, max_pixels: int, memory=None, models: tuple[str, ...] = ()
):
    """The `falcon.before` hook that parses and checks one multipart upload; with `memory`
    (UploadMemory, above) the body is read only once its size fits the app's budget. `models`:
    the names an upload may ask for (Settings.model_names: the default first)."""

    def validate_upload(req: falcon.Request, resp, resource, params) -> None:
        if req.content_length and req.content_length > max_upload_bytes + MULTIPART_OVERHEAD:
            raise falcon.HTTPContentTooLarge(
                description=f"upload is larger than the {max_upload_bytes}-byte limit"
            )
        if not (req.content_type or "").startswith("multipart/form-data"):
            raise falcon.HTTPBadRequest(
                description="expected multipart/form-data with an image in field 'myfile'"
            )
        if req.content_length is None:
            # Waitress reads a body without a length (and without chunking) as empty.
            raise falcon.HTTPLengthRequired(
                description="send Content-Length (or chunked transfer encoding) with the upload"
            )
        if memory is not None:
            memory.take(req, req.content_length)
        filename, data, field_model = _read_parts(req, max_upload_bytes)
        model = chosen_model(req.get_param(MODEL_FIELD) or field_model, models)
        if not data:
            raise falcon.HTTPBadRequest(description="the uploaded file is empty")
        fmt = _sniff_image(data, max_pixels)
        req.context.upload = Upload(
            data=data,
            filename=clean_filename(filename),
            format=fmt,
            sha256=hashlib.sha256(data).hexdigest(),
            model=model,
        )

    return validate_upload


def image_problem(data: bytes, max_pixels: int) -> str:
    """Why `data` would be refused as an upload ('' if it would not): the same checks."""
    if not data:
        return "the file is empty"
    try:
        _sniff_image(data, max_pixels)
    except falcon.HTTPError as error:
        return error.description or error.title
    return ""


def _read_parts(req: falcon.Request, max_upload_bytes: int) -> tuple[str | None, bytes, str]:
    """(filename, bytes) of the file part and the `model` field's value ("" if none), in
    whichever order the form sends them."""
    found, model = None, ""
    try:
        for part in req.get_media():
            if part.name in FIELDS and found is None:
                data = part.stream.read(max_upload_bytes + 1)
                if len(data) > max_upload_bytes:
                    raise falcon.HTTPContentTooLarge(
                        description=f"upload is larger than the {max_upload_bytes}-byte limit"
                    )
                found = (part.filename, data)
            elif part.name == MODEL_FIELD:
                model = part.stream.read(_MAX_MODEL_FIELD).decode("utf-8", "replace").strip()
            else:
                part.stream.read()  # skip other fields, bounded by Waitress's body limit
    except falcon.MediaMalformedError:
        raise falcon.HTTPBadRequest(description="malformed multipart body") from None
    if found is None:
        raise falcon.HTTPBadRequest(description="no file in field 'myfile' (or 'inputFile')")
    return *found, model


_MAX_MODEL_FIELD = 128


def chosen_model(asked: str, models: tuple[str, ...]) -> str:
    """The model an upload or job asks for, as its name; the default (models[0]) when it
    names none; a 400 that lists the known ones for a name not among them."""
    if not asked or not models:
        return models[0] if models else ""
    if asked not in models:
        raise falcon.HTTPBadRequest(
            description=f"unknown model {asked[:64]!r}: this deployment serves {', '.join(models)}"
        )
    return asked


def _sniff_image(data: bytes, max_pixels: int) -> str:
    """Read only the header: format and size, without decoding the pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        raise falcon.HTTPContentTooLarge(
            description=f"image has more than {max_pixels} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise falcon.HTTPUnsupportedMediaType(
            description="not an image this service reads (JPEG, PNG, WebP, GIF, BMP, TIFF)"
        ) from None
    if fmt is None or fmt.lower() not in IMAGE_FORMATS:
        raise falcon.HTTPUnsupportedMediaType(description=f"image format {fmt} is not accepted")
    if width * height > max_pixels:
        raise falcon.HTTPContentTooLarge(
            description=f"image is {width}x{height}, more than the {max_pixels}-pixel limit"
        )
    # Bytes per pixel count too: a 16-bit or 4-channel image takes 2-4x the memory decoded.
    size = footprint(data)
    if size.decoded_bytes > limit_bytes(max_pixels):
        raise falcon.HTTPContentTooLarge(
            description=f"image is {size.describe()}: more than the {max_pixels} 8-bit RGB "
            "pixels' worth of memory allowed"
        )
    return fmt
