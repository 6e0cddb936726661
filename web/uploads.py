"""Upload validation, run as a Falcon hook before the responder sees anything.

The client's filename and Content-Type are never trusted: the format is sniffed from the bytes,
and the filename is reduced to a display name that shapes no key or path.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import falcon
from PIL import Image, UnidentifiedImageError

from runtime.messages import IMAGE_FORMATS, MAX_FILENAME, printable_name
from runtime.pixels import footprint, limit_bytes

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
    (guards.UploadMemory) the body is read only once its size fits the app's budget. `models`:
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
