"""Two web processes share one request queue and one worker; each client gets its own answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.http_client import stem, stem_and_label, upload, variants


def test_two_webs_share_a_worker_and_never_cross_talk(service_factory):
    service = service_factory()
    service.start_worker()
    first, second = service.start_web(), service.start_web()
    images = variants(40)

    def send(indexed):
        index, (name, data) = indexed
        return name, upload(first if index % 2 else second, data, name)

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(send, enumerate(images)))
    for name, response in answers:
        assert response.status_code == 200, response.text
        assert stem_and_label(response.text)[0] == stem(name)
    # Each web deleted nothing of the other's: both still answer.
    for url in (first, second):
        name, data = images[0]
        assert upload(url, data, name).status_code == 200
