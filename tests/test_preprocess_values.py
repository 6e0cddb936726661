"""ArrayTransform's normalisation: the values of (x / 255 - mean) / std in float32, bit for bit,
however the arithmetic is arranged for speed (unit: no model, synthetic pixels)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from worker.package import Preprocessing
from worker.preprocess import ArrayTransform

pytestmark = pytest.mark.unit


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
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    channels_first = pixels.astype(np.float32).transpose(2, 0, 1)
    expected = channels_first * (1.0 / (255.0 * std)) - mean / std
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == (3, 37, 53)
    np.testing.assert_array_equal(got, expected)
