"""Load: 1000 requests at concurrency 100, no loss and no cross-talk (SOAK_REQUESTS for more)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tests.http_client import stem, stem_and_label, upload, variants

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "1000"))
DISTINCT = 100


def test_1000_requests_at_concurrency_100(service_factory):
    # No result cache: every request goes through the queue and the model.
    service = service_factory(RESULT_CACHE="false", BATCH_MAX="10")
    url = service.start_web()
    for _ in range(2):
        service.start_worker(TORCH_THREADS="1")
    images = variants(DISTINCT)
    alone = {}
    for name, data in images:
        response = upload(url, data, name)
        assert response.status_code == 200, response.text
        alone[name] = stem_and_label(response.text)[1]
    work = [images[i % DISTINCT] for i in range(REQUESTS)]
    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda item: upload(url, item[1], item[0]), work))
    statuses = [response.status_code for response in answers]
    assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
    for (name, _), response in zip(work, answers, strict=True):
        got_stem, label = stem_and_label(response.text)
        assert got_stem == stem(name), "an answer for another client's image"
        assert label == alone[name]
