"""Issue 11 finding 6: bytes per pixel count in the limit, and decodes share a memory budget."""

from __future__ import annotations

import threading
import time

import falcon.testing
import pytest

from runtime.budget import ByteBudget
from runtime.pixels import footprint
from runtime.settings import Settings
from tests import big_images
from tests.support.multipart import form
from web.app import create_app
from worker.imaging import PEAK_FACTOR, DecodeBudget, ImageError

BOMB = big_images.png16(6300, 6300)  # 39.7 M pixels: under the 40 M limit, 238 MB decoded


def test_footprint_counts_the_bytes_of_each_pixel():
    size = footprint(BOMB)
    assert (size.pixels, size.channels, size.sample_bytes) == (6300 * 6300, 3, 2)
    assert footprint(big_images.jpeg(64, 32)).decoded_bytes == 64 * 32 * 3


def test_the_web_tier_refuses_a_16_bit_image_with_pixels_under_the_limit():
    app = create_app(Settings(), gateway=None, ready=lambda: None, status=lambda: {})
    body, headers = form({"myfile": ("x.png", BOMB)}, content_type=None)
    response = falcon.testing.TestClient(app).simulate_post("/upload", body=body, headers=headers)
    assert response.status_code == 413
    assert "6300x6300 at 6 bytes a pixel" in response.text


def test_the_worker_refuses_it_too():
    with pytest.raises(ImageError, match="more than the 114 MiB allowed"):
        DecodeBudget(2**30, 40_000_000).cost(BOMB)


def test_concurrent_decodes_stay_within_the_budget():
    image = big_images.jpeg(1000, 1000)  # 3 MB decoded, 15 MB reserved
    cost = 1000 * 1000 * 3 * PEAK_FACTOR
    budget = DecodeBudget(3 * cost, 40_000_000)
    inside, most = [0], [0]
    lock = threading.Lock()

    def decode_one():
        with budget.reserve(image):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=decode_one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert most[0] == 3 and budget.peak_reserved == 3 * cost
    with budget.reserve(image):  # everything was given back
        assert budget.peak_reserved == 3 * cost


def test_an_image_larger_than_the_whole_budget_decodes_alone():
    image = big_images.jpeg(1000, 1000)
    budget = DecodeBudget(1, 40_000_000)
    with budget.reserve(image):  # does not wait forever for room the budget never has
        assert budget.peak_reserved == budget.cost(image) > budget.budget_bytes
    with budget.reserve(image):  # and gave it all back: the next one is alone too
        assert budget.peak_reserved == budget.cost(image)


def test_the_byte_budget_waits_for_room_and_times_out_with_false():
    """runtime.budget: the one rule under the web's upload memory and the worker's decodes."""
    budget = ByteBudget(10)
    assert budget.acquire(6) and budget.acquire(4)  # exactly the limit
    assert budget.acquire(1, timeout_s=0) is False  # no room: refused at once, nothing held
    assert budget.held == 10
    budget.release(4)
    assert budget.acquire(3, timeout_s=0)
    budget.release(3)
    budget.release(6)
    assert budget.acquire(25, timeout_s=0)  # larger than the whole limit: alone
    assert budget.acquire(1, timeout_s=0) is False
    budget.release(25)
    assert (budget.held, budget.peak) == (0, 25)
