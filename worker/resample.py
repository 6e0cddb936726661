"""The centre crop of a resized image, resampling only the crop's pixels (issue 23).

Resizing a 4:3 photo's short side to 256 and keeping the centre 224 x 224 throws away more than a
third of the pixels the resize computed (224 x 224 of 341 x 256). Pillow's `resize(box=...)`
computes only a region: the crop's box in source coordinates, resized to the crop's size, uses
the same kernels over the same source pixels as the whole resize did (a kernel still reaches
outside the box, as far as the image goes), at about half the CPU.

Two things keep it apart from the whole resize, and what is done about each:

- Pillow takes the box as single-precision floats and places the kernel centres from it, so a
  few coefficients round the other way: up to 1 level in 255, in at most 0.04 % of the values on
  the sample and phone photos (tests/test_preprocess_values.py). Accepted: issue 23's rule is the
  same top-1 and top-5 scores within a few points, which it meets on every sample and phone photo.
- Pillow resamples in two passes, horizontal and vertical, each rounded to 8 bits, and since
  Pillow 13 it runs the vertical one first when the height loses more than twice the pixels the
  width loses (`Resample.c`). That compares the whole image with the output size, so a tall
  image's crop and the whole image can get different orders, and the order moves pixels by up
  to 23 levels on noise. Where they would differ, the crop is resampled in two one-axis passes
  in the whole image's order.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image


def crop_offsets(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of the centre crop, rounded as torchvision's CenterCrop rounds them."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def resized_crop(
    image: Image.Image, size: tuple[int, int], crop: int, resample: Image.Resampling
) -> Image.Image:
    """What `image.resize(size, resample)` then its centre `crop` x `crop` would give (within a
    level), resampling only the crop; `size` must be at least `crop` on both sides."""
    width, height = size
    left, top = crop_offsets(width, height, crop)
    scale_x, scale_y = image.width / width, image.height / height
    x0, x1 = left * scale_x, (left + crop) * scale_x
    y0, y1 = top * scale_y, (top + crop) * scale_y
    whole_first = vertical_first(image.size, size)
    if whole_first == vertical_first(image.size, (crop, crop)):
        return image.resize((crop, crop), resample, box=(x0, y0, x1, y1))
    if whole_first:
        rows = image.resize((image.width, crop), resample, box=(0, y0, image.width, y1))
        return rows.resize((crop, crop), resample, box=(x0, 0, x1, crop))
    columns = image.resize((crop, image.height), resample, box=(x0, 0, x1, image.height))
    return columns.resize((crop, crop), resample, box=(0, y0, crop, y1))


def vertical_first(source: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether Pillow's resize of a `source` image to `out` runs its vertical pass first."""
    (width, height), (out_width, out_height) = source, out
    lost_height = height - out_height
    return _orders_passes() and lost_height > 0 and lost_height > 2 * (width - out_width)


@functools.cache
def _orders_passes() -> bool:
    """Whether this Pillow runs the vertical pass first where the height loses the most (13
    does, earlier ones never do): one tiny resize where the rule says vertical first, against
    each order done by hand."""
    source = Image.fromarray(np.random.default_rng(13).integers(0, 256, (60, 6), dtype=np.uint8))
    resample = Image.Resampling.BICUBIC
    whole = np.asarray(source.resize((4, 12), resample))
    by_rows = np.asarray(source.resize((6, 12), resample).resize((4, 12), resample))
    by_columns = np.asarray(source.resize((4, 60), resample).resize((4, 12), resample))
    if np.array_equal(by_rows, by_columns):
        raise RuntimeError("the pass-order probe cannot tell the orders apart")
    return bool(np.array_equal(whole, by_rows))
