"""ArrayTransform's values: the normalisation bit for bit that of (x / 255 - mean) / std, and the
crop-only resize within issue 23's rule against resizing the whole image then cropping it
(today's transform before the change): the same top-1 on every sample and phone photo, top-5
scores within a few points, through the real model. A shifted crop or a wrong mean breaks it.

The pixel checks are unit tests (the sample photos, no model); the model checks are e2e."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.imaging import ArrayTransform, decode, vertical_first
from worker.package import Preprocessing

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
SAMPLES = sorted(json.loads((IMAGES / "labels.json").read_text()))
PHONES = 30  # the bench's phone set (bench.phones.PhonePhotos)
# A package's default preprocessing (short side 256, centre 224, ImageNet's mean and std): the
# pixel checks; the model checks take the default model's own (mean = std = 0.5).
DEFAULT = Preprocessing()
# What the crop-only resize may change (measured: at most 1 level, in at most 0.04 % of the
# values, on the sample and phone photos): Pillow places its kernel centres from the crop's
# box in floating point, so a few coefficients round the other way.
MAX_LEVELS = 1
MAX_CHANGED = 0.001
# Issue 23's rule, as tests/test_runtimes.py holds the torch-free path to it: top-5 scores
# within a few points of today's transform's.
SCORE_POINTS = 0.01


def resize_then_crop(image: Image.Image, pre: Preprocessing, shift: int = 0) -> np.ndarray:
    """Today's transform before the change, spelled out: the whole image resized (short side
    `resize_side`, long side floored, as torchvision), the centre crop (offsets rounded, moved
    `shift` pixels right and down), then (x / 255 - mean) / std as (3, h, w) float32."""
    width, height = image.size
    side = pre.resize_side
    size = (
        (side, int(side * height / width))
        if width <= height
        else (int(side * width / height), side)
    )
    resample = Image.Resampling[pre.interpolation.upper()]
    resized = image.resize(size, resample) if size != image.size else image
    left = int(round((size[0] - pre.crop) / 2.0)) + shift
    top = int(round((size[1] - pre.crop) / 2.0)) + shift
    crop = np.asarray(resized.crop((left, top, left + pre.crop, top + pre.crop)))
    return normalised(crop, pre)


def normalised(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    return pixels.astype(np.float32).transpose(2, 0, 1) * (1.0 / (255.0 * std)) - mean / std


def levels(array: np.ndarray, pre: Preprocessing = DEFAULT) -> np.ndarray:
    """A normalised array back to its 0-255 levels."""
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    return np.rint((array * std + mean) * 255.0)


def pixel_problems(
    expected: np.ndarray, got: np.ndarray, pre: Preprocessing = DEFAULT
) -> list[str]:
    """Where `got` is further from `expected` than the crop-only resize may be."""
    if got.shape != expected.shape:
        return [f"shape {got.shape}, expected {expected.shape}"]
    apart = np.abs(levels(got, pre) - levels(expected, pre))
    problems = []
    if apart.max() > MAX_LEVELS:
        problems.append(f"{apart.max():.0f} levels apart")
    if (apart > 0).mean() > MAX_CHANGED:
        problems.append(f"{(apart > 0).mean():.4%} of the values differ")
    return problems


def score_problems(expected, got, names, points: float = SCORE_POINTS) -> list[str]:
    """Where `got` breaks the rule against `expected` (top-5 (label, score) lists per photo):
    a different top-1, or one of the expected top-5 scores more than `points` away."""
    problems = []
    for name, want, have in zip(names, expected, got, strict=True):
        if want[0][0] != have[0][0]:
            problems.append(f"{name}: top-1 {have[0][0]!r}, expected {want[0][0]!r}")
        scores = dict(have)
        worst = max(abs(score - scores.get(label, 0.0)) for label, score in want)
        if worst > points:
            problems.append(f"{name}: a top-5 score {worst:.4f} away")
    return problems


def sample_images() -> dict[str, Image.Image]:
    return {
        name: decode((IMAGES / name).read_bytes(), min_side=DEFAULT.resize_side, output="pil")
        for name in SAMPLES
    }


def test_normalised_pixels_are_those_of_the_float_formula():
    pre = Preprocessing(
        resize_side=None,
        crop=None,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        interpolation="bicubic",
        colour_mode="RGB",
    )
    pixels = np.random.default_rng(23).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    got = ArrayTransform(pre)(Image.fromarray(pixels))
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == (3, 37, 53)
    np.testing.assert_array_equal(got, normalised(pixels, pre))


def test_crop_only_resize_is_within_a_level_of_resizing_everything_on_every_sample_photo():
    transform = ArrayTransform(DEFAULT)
    for name, image in sample_images().items():
        got = transform(image)
        assert got.dtype == np.float32 and got.flags.c_contiguous, name
        assert pixel_problems(resize_then_crop(image, DEFAULT), got) == [], name


def test_the_pixel_check_catches_a_crop_one_pixel_off():
    transform = ArrayTransform(DEFAULT)
    for name, image in sample_images().items():
        assert pixel_problems(resize_then_crop(image, DEFAULT, shift=1), transform(image)), name


# Wide and tall, scaled up and down; (200, 700), (300, 504) and (224, 400): Pillow resizes the
# whole image horizontally first and the crop vertically first; (300, 640): vertically first both.
SHAPES = [(504, 378), (378, 504), (224, 224), (200, 700), (300, 504), (224, 400), (300, 640)]
# Noise is the worst case for rounding (a level's difference between passes is amplified by the
# bicubic kernel's gain): measured at most 2 levels in 0.2 % of the values; a pass order unlike
# the whole resize's gives up to 23 levels in 30 %.
NOISE_LEVELS, NOISE_CHANGED = 2, 0.005


def noise(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(sum(size))
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("size", SHAPES)
def test_crop_only_resize_keeps_the_whole_resizes_pass_order(size):
    image = noise(size)
    apart = np.abs(
        levels(ArrayTransform(DEFAULT)(image)) - levels(resize_then_crop(image, DEFAULT))
    )
    assert apart.max() <= NOISE_LEVELS and (apart > 0).mean() <= NOISE_CHANGED


@pytest.mark.parametrize("size", SHAPES)
def test_the_resize_computes_only_the_crop(size, monkeypatch):
    """Every resize ArrayTransform asks Pillow for is at most the crop on one side (the crop
    itself, or one axis's pass over the crop's rows or columns): never the whole resized image,
    short side 256, of which the crop keeps a part."""
    outputs = []
    pillow_resize = Image.Image.resize

    def resize(self, out, *args, **kwargs):
        outputs.append(tuple(out))
        return pillow_resize(self, out, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    assert ArrayTransform(DEFAULT)(noise(size)).shape == (3, DEFAULT.crop, DEFAULT.crop)
    assert outputs and outputs[-1] == (DEFAULT.crop, DEFAULT.crop)
    assert all(min(out) <= DEFAULT.crop for out in outputs), outputs


@pytest.mark.parametrize(
    "source, out",
    [
        ((6, 60), (4, 12)),
        ((300, 640), (256, 546)),
        ((300, 504), (256, 430)),
        ((200, 700), (224, 224)),
        ((224, 400), (224, 224)),
        ((504, 378), (224, 224)),
    ],
)
def test_vertical_first_says_which_pass_pillow_runs_first(source, out):
    image = noise(source).convert("L")
    resample = Image.Resampling.BICUBIC
    whole = np.asarray(image.resize(out, resample, box=(1.5, 0.5, source[0] - 1, source[1])))
    by_rows = image.resize((source[0], out[1]), resample, box=(0, 0.5, source[0], source[1]))
    by_rows = by_rows.resize(out, resample, box=(1.5, 0, source[0] - 1, out[1]))
    by_columns = image.resize((out[0], source[1]), resample, box=(1.5, 0, source[0] - 1, source[1]))
    by_columns = by_columns.resize(out, resample, box=(0, 0.5, out[0], source[1]))
    expected = by_rows if vertical_first(source, out) else by_columns
    np.testing.assert_array_equal(whole, np.asarray(expected))


@pytest.mark.parametrize("size", [(256, 256), (300, 256), (256, 999)])
def test_an_image_at_the_resize_size_is_only_cropped_bit_for_bit(size):
    image = noise(size)
    np.testing.assert_array_equal(ArrayTransform(DEFAULT)(image), resize_then_crop(image, DEFAULT))


def test_smaller_than_the_crop_without_a_resize_is_padded_with_zeros():
    pre = Preprocessing(resize_side=None, crop=8)
    pixels = np.full((4, 6, 3), 255, dtype=np.uint8)
    got = levels(ArrayTransform(pre)(Image.fromarray(pixels)), pre)
    assert got.shape == (3, 8, 8)
    assert (got[:, 2:6, 1:7] == 255).all() and got.sum() == 255 * 3 * 4 * 6


# The rule through the real model ---------------------------------------------------------


@pytest.fixture(scope="module")
def rule_check(tmp_path_factory):
    """`check(transform)`: the rule's problems for `transform` against resize_then_crop, through
    PyTorch fp32 (the default model, eager, with its own preprocessing: `check.pre`), on every
    sample photo and the bench's phone set."""
    import torch

    from bench.phones import ensure_cached
    from worker import torch_models
    from worker.models import DEFAULT_MODEL, TOP_K

    model, _, categories, pre = torch_models.build(DEFAULT_MODEL)
    phones = ensure_cached(PHONES, tmp_path_factory.mktemp("phones"))
    photos = {name: (IMAGES / name).read_bytes() for name in SAMPLES}
    photos.update({f"phone-{path.name}": path.read_bytes() for path in phones})
    images = {
        name: decode(data, min_side=pre.resize_side, output="pil") for name, data in photos.items()
    }
    names = list(images)

    def answers(arrays):
        with torch.inference_mode():
            probs = model(torch.from_numpy(np.stack(arrays))).softmax(dim=1)
        top = probs.topk(TOP_K, dim=1)
        return [
            [(categories[c], p) for c, p in zip(row_c.tolist(), row_p.tolist(), strict=True)]
            for row_c, row_p in zip(top.indices, top.values, strict=True)
        ]

    today = answers([resize_then_crop(images[n], pre) for n in names])

    def check(transform) -> list[str]:
        return score_problems(today, answers([transform(images[n]) for n in names]), names)

    check.names, check.images, check.pre = names, images, pre
    return check


@pytest.mark.e2e
def test_crop_only_resize_gives_todays_top1_and_top5_on_every_sample_and_phone_photo(rule_check):
    assert len(rule_check.names) == len(SAMPLES) + PHONES
    pre = rule_check.pre
    transform = ArrayTransform(pre)
    for name, image in rule_check.images.items():
        assert pixel_problems(resize_then_crop(image, pre), transform(image), pre) == [], name
    assert rule_check(transform) == []


@pytest.mark.e2e
def test_the_rule_catches_a_shifted_crop_and_a_wrong_mean(rule_check):
    pre = rule_check.pre
    shifted = rule_check(lambda image: resize_then_crop(image, pre, shift=16))
    assert shifted, "a crop 16 px off passed the rule"
    wrong_mean = ArrayTransform(replace(pre, mean=tuple(m + 0.1 for m in pre.mean)))
    assert rule_check(wrong_mean), "a wrong mean passed the rule"


def test_a_new_preprocess_is_a_new_export_and_checked_again(monkeypatch, tmp_path):
    """The reference answers and each runtime's check are on this preprocess's arrays: another
    PREPROCESS_VERSION gives another package (exported again, its reference answers computed
    on the new arrays) and another machine record (the runtimes checked again)."""
    from worker import exported
    from worker.models import DEFAULT_MODEL
    from worker.package import write_package

    (tmp_path / "model.onnx").write_bytes(b"stand-in artefact")
    package = write_package(
        tmp_path, tmp_path / "model.onnx", ["cat"], name="m", version="1", preprocessing=DEFAULT
    )
    before = exported.version_of(exported.source_of(DEFAULT_MODEL))
    key = exported.MachineRecords.key(package, "openvino", 1)
    monkeypatch.setattr(exported, "PREPROCESS_VERSION", exported.PREPROCESS_VERSION + 1)
    assert exported.version_of(exported.source_of(DEFAULT_MODEL)) != before
    assert exported.MachineRecords.key(package, "openvino", 1) != key
