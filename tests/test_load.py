"""Load: 1000 requests at concurrency 100, no loss and no cross-talk (SOAK_REQUESTS for more).

The client opens a new connection per request and keeps every response, so every socket stays
open on its side until the end (issue 27): the web process must keep only its per-client share
of them. Before that bound it held one descriptor per request and died at 1,024 (select()).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from runtime.settings import Settings
from tests.http_client import stem, stem_and_label, upload, variants
from tests.support.processes import PeakSampler, open_descriptors

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
    web = service.process("web-0").pid
    before = open_descriptors(web)
    with PeakSampler(web) as peak, ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda item: upload(url, item[1], item[0]), work))
    print(
        f"web: {before} descriptors before, peak {peak.peak_fds},"
        f" peak RSS {peak.peak_rss_mb:.0f} MB"
    )
    # Its share of the client's held sockets, and one S3 and one SQS socket per busy thread.
    bound = before + Settings().web_connections_per_client + 2 * 100 + 32
    assert peak.peak_fds <= bound, f"{peak.peak_fds} descriptors: held sockets pile up"
    statuses = [response.status_code for response in answers]
    assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
    for (name, _), response in zip(work, answers, strict=True):
        got_stem, label = stem_and_label(response.text)
        assert got_stem == stem(name), "an answer for another client's image"
        assert label == alone[name]
