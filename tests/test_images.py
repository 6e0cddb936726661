"""The sample photos and their labels, and decode()/sniff() on real and broken bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.models import ResNet18_Weights

from runtime.messages import IMAGE_FORMATS
from worker.imaging import ImageError, decode, sniff

IMAGES = Path(__file__).resolve().parent.parent / "images"
# worker.imaging silences torchvision's codec deprecation notice, but pytest resets warning
# filters around each test; the notice says nothing about these tests.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities")
NOT_PHOTOS = {"labels.json", "SOURCES.md"}
PIL_FORMAT = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
}


def photo_names() -> list[str]:
    return sorted(p.name for p in IMAGES.iterdir() if p.name not in NOT_PHOTOS)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "webp":
        options.setdefault("lossless", True)
    image.save(buffer, PIL_FORMAT[fmt], **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def gradient() -> Image.Image:
    """A small RGB picture with distinct values in each channel, so channel mix-ups show."""
    y, x = np.mgrid[0:48, 0:64]
    array = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def test_labels_list_exactly_the_photos_present():
    labels = json.loads((IMAGES / "labels.json").read_text())
    assert sorted(labels) == photo_names()
    assert len(labels) >= 8


def test_every_accepted_label_is_an_imagenet_class_name():
    categories = set(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    labels = json.loads((IMAGES / "labels.json").read_text())
    for name, accepted in labels.items():
        assert accepted, name
        assert set(accepted) <= categories, name


def test_sources_name_every_photo():
    sources = (IMAGES / "SOURCES.md").read_text()
    for name in photo_names():
        assert f"| {name} |" in sources, name


@pytest.mark.parametrize("name", photo_names())
def test_each_photo_decodes_to_rgb(name):
    data = (IMAGES / name).read_bytes()
    assert sniff(data) in IMAGE_FORMATS
    image = decode(data)
    with Image.open(IMAGES / name) as reference:
        width, height = reference.size
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, height, width)


@pytest.mark.parametrize("name", photo_names())
def test_photos_decode_to_the_same_pixels_as_pillow(name):
    # JPEG goes through torchvision's decoder; the model's answers must not depend on that.
    with Image.open(IMAGES / name) as image:
        expected = np.array(ImageOps.exif_transpose(image).convert("RGB"))
    assert torch.equal(
        decode((IMAGES / name).read_bytes()).permute(1, 2, 0), torch.from_numpy(expected)
    )


@pytest.mark.parametrize("fmt", sorted(IMAGE_FORMATS))
def test_sniff_recognises_each_allowed_format(fmt, gradient):
    assert sniff(encode(gradient, fmt)) == fmt


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world\n",
        b"BMW 320d for sale, one owner, full service history",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 40,
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
    ids=["empty", "text", "text-starting-BM", "pdf", "zip", "svg"],
)
def test_sniff_and_decode_refuse_what_is_not_an_allowed_image(data):
    assert sniff(data) is None
    with pytest.raises(ImageError, match="not an image"):
        decode(data)


@pytest.mark.parametrize("fmt", sorted(IMAGE_FORMATS - {"jpeg"}))
def test_lossless_formats_decode_to_the_same_pixels(fmt, gradient):
    # GIF is palette based: a 64x48 gradient has under 256 colours only in quantised form.
    source = gradient.quantize(256).convert("RGB") if fmt == "gif" else gradient
    image = decode(encode(source, fmt))
    expected = torch.from_numpy(np.array(source)).permute(2, 0, 1)
    assert torch.equal(image, expected)


def test_jpeg_decodes_close_to_its_source(gradient):
    image = decode(encode(gradient, "jpeg", quality=95))
    expected = torch.from_numpy(np.array(gradient)).permute(2, 0, 1)
    assert tuple(image.shape) == (3, 48, 64)
    assert (image.int() - expected.int()).abs().float().mean() < 3


@pytest.mark.parametrize("fmt", ["png", "bmp", "webp", "tiff"])
def test_grayscale_becomes_three_equal_channels(fmt, gradient):
    gray = gradient.convert("L")
    image = decode(encode(gray, fmt))
    expected = torch.from_numpy(np.array(gray))
    assert image.shape == (3, 48, 64)
    for channel in image:
        assert torch.equal(channel, expected)


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff"])
def test_rgba_drops_alpha(fmt, gradient):
    rgba = gradient.copy()
    rgba.putalpha(Image.new("L", rgba.size, 77))
    image = decode(encode(rgba, fmt))
    assert torch.equal(image, torch.from_numpy(np.array(gradient)).permute(2, 0, 1))


def test_palette_png_expands_to_rgb(gradient):
    palette = gradient.quantize(64)
    image = decode(encode(palette, "png"))
    assert torch.equal(image, torch.from_numpy(np.array(palette.convert("RGB"))).permute(2, 0, 1))


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    values = np.array([[0, 256, 65535, 32768]], dtype=np.uint16)
    image = decode(encode(Image.fromarray(values), "png"))
    assert image.dtype == torch.uint8
    assert image[0, 0].tolist() == [0, 1, 255, 128]


def test_exif_orientation_is_applied(gradient):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the stored 64x48 pixels display as 48x64
    image = decode(encode(gradient, "jpeg", exif=exif.tobytes()))
    assert tuple(image.shape) == (3, 64, 48)


@pytest.mark.parametrize("fmt", sorted(IMAGE_FORMATS))
def test_truncated_images_raise_image_error(fmt):
    # Noise does not compress, so half the file always cuts into the pixel data.
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    data = encode(noise, fmt)
    with pytest.raises(ImageError) as caught:
        decode(data[: len(data) // 2])
    assert fmt in str(caught.value) and "\n" not in str(caught.value)


def test_real_photo_truncated_raises_image_error():
    data = (IMAGES / "chelsea.jpg").read_bytes()
    with pytest.raises(ImageError, match="jpeg is truncated or corrupt"):
        decode(data[: len(data) - 1000])


@pytest.mark.parametrize("fmt", ["jpeg", "png", "gif"])
def test_garbage_after_a_valid_header_raises_image_error(fmt, gradient):
    data = encode(gradient, fmt)
    garbage = data[:16] + bytes(range(256)) * 8
    with pytest.raises(ImageError):
        decode(garbage)


def test_max_pixels_refuses_large_images_before_decoding(gradient):
    data = encode(gradient, "png")
    assert decode(data, max_pixels=64 * 48).shape == (3, 48, 64)
    with pytest.raises(ImageError, match="64x48 pixels is more than the 3071 allowed"):
        decode(data, max_pixels=64 * 48 - 1)


# Decoding at the size the model needs ---------------------------------------------------------


@pytest.fixture(scope="module")
def large_photo() -> Image.Image:
    """A real photo at 2048x1366: JPEG can decode it at 1/2, 1/4 and 1/8 of its size."""
    with Image.open(IMAGES / "rocket.jpg") as image:
        return image.convert("RGB").resize((2048, 1366), Image.Resampling.BICUBIC)


@pytest.mark.parametrize(
    ("min_side", "shape"),
    [(160, (3, 171, 256)), (256, (3, 342, 512)), (600, (3, 683, 1024)), (700, (3, 1366, 2048))],
)
def test_jpeg_decodes_at_the_smallest_scale_still_covering_min_side(large_photo, min_side, shape):
    assert tuple(decode(encode(large_photo, "jpeg", quality=90), min_side=min_side).shape) == shape


def test_scaled_jpeg_is_close_to_the_full_decode_reduced(large_photo):
    data = encode(large_photo, "jpeg", quality=90)
    scaled = decode(data, min_side=256)
    with Image.open(io.BytesIO(data)) as image:
        reduced = torch.from_numpy(np.array(image.convert("RGB").reduce(4))).permute(2, 0, 1)
    assert scaled.shape == reduced.shape
    assert (scaled.int() - reduced.int()).abs().float().mean() < 2


def test_scaled_jpeg_honours_exif_orientation(large_photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 2048x1366 landscape, shown 1366x2048 portrait
    data = encode(large_photo, "jpeg", quality=90, exif=exif.tobytes())
    upright = decode(data, min_side=256)
    assert tuple(upright.shape) == (3, 512, 342)
    # Pixel for pixel the upright image is the stored one turned 90 degrees clockwise.
    stored = decode(encode(large_photo, "jpeg", quality=90), min_side=256)
    assert torch.equal(upright, torch.rot90(stored, k=-1, dims=(1, 2)))


def test_scaled_grayscale_jpeg_becomes_three_equal_channels(large_photo):
    image = decode(encode(large_photo.convert("L"), "jpeg", quality=90), min_side=256)
    assert tuple(image.shape) == (3, 342, 512)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_jpeg_too_small_to_scale_decodes_in_full_as_before():
    data = (IMAGES / "chelsea.jpg").read_bytes()  # 451x300: half would be under 256
    assert torch.equal(decode(data, min_side=256), decode(data))


def _small_jpegs(gradient) -> dict[str, bytes]:
    """JPEGs too small to scale: the sample photos under 512 px, one rotated, grey and CMYK."""
    exif = Image.Exif()
    exif[0x0112] = 6
    jpegs = {}
    for name in photo_names():
        with Image.open(IMAGES / name) as image:
            if image.format == "JPEG" and min(image.size) < 512:  # half would be under 256
                jpegs[name] = (IMAGES / name).read_bytes()
    assert len(jpegs) >= 5
    jpegs["rotated"] = encode(gradient, "jpeg", exif=exif.tobytes())
    jpegs["grey"] = encode(gradient.convert("L"), "jpeg")
    jpegs["cmyk"] = encode(gradient.convert("CMYK"), "jpeg")
    return jpegs


@pytest.mark.parametrize("min_side", [256, None])
def test_a_pil_decode_opens_a_jpeg_too_small_to_scale_once_for_the_same_pixels(
    gradient, min_side, monkeypatch
):
    """output="pil" decodes the JPEG in full from the open it tried to scale in: the pixels of
    a plain Pillow decode (EXIF rotation applied, RGB), one Image.open instead of two."""
    opened = []
    pillow_open = Image.open
    for name, data in _small_jpegs(gradient).items():
        with pillow_open(io.BytesIO(data)) as image:
            expected = np.array(ImageOps.exif_transpose(image).convert("RGB"))
        opened.clear()
        monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pillow_open(*a, **k))
        got = decode(data, min_side=min_side, output="pil")
        monkeypatch.undo()
        assert got.mode == "RGB", name
        np.testing.assert_array_equal(np.asarray(got), expected, err_msg=name)
        assert len(opened) == 1, name


@pytest.mark.parametrize("fmt", sorted(IMAGE_FORMATS - {"jpeg"}))
def test_other_formats_ignore_min_side(fmt, large_photo):
    source = large_photo.resize((640, 427))
    data = encode(source.quantize(256) if fmt == "gif" else source, fmt)
    assert torch.equal(decode(data, min_side=256), decode(data))


def test_truncated_large_jpeg_raises_image_error_on_the_scaled_path(large_photo):
    data = encode(large_photo, "jpeg", quality=90)
    with pytest.raises(ImageError, match="jpeg is truncated or corrupt"):
        decode(data[: len(data) // 2], min_side=256)
