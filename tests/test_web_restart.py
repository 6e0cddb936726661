"""Issue 27: when the web process dies under load, `make up` (python -m embedded up) restarts it
and says so, instead of stopping the stack, and every upload the dead process had stored and
queued is answered by GET /results/<id> of the new one. Real processes, moto over HTTP."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from embedded.stack import wait_http
from tests.conftest import ROOT, free_port
from tests.http_client import photos, upload
from tests.support.processes import children
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e  # starts processes (or reads built images)

UPLOADS = 40


def _embedded_up(tmp_path, web_port: int) -> subprocess.Popen:
    env = {**os.environ, "PORT": str(web_port), "RESULT_CACHE": "false", "RECEIVE_WAIT_S": "2"}
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)
    args = ["up", "--aws-port", str(free_port()), "--log-dir", str(tmp_path), "--workers", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "embedded", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _queued_ids(log_text: str) -> set[str]:
    return {
        line.split("request ", 1)[1].split()[0]
        for line in log_text.splitlines()
        if " queued" in line and "request " in line
    }


def test_a_killed_web_process_is_restarted_and_what_it_queued_is_answered(tmp_path):
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}"
    stack = _embedded_up(tmp_path, web_port)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(stack.stdout), daemon=True)
    reader.start()
    try:
        wait_http(f"{url}/healthz", 120, stack)
        sent = {}
        for i in range(UPLOADS):
            name, data, ok = photos()[i % len(photos())]
            sent[uuid.uuid4().hex] = (name, data, ok)

        def send(item):
            request_id, (name, data, _) = item
            try:
                return upload(url, data, name, request_id=request_id, timeout=60).status_code
            except requests.RequestException:
                return None  # its connection died with the web process

        web_log = tmp_path / "web.log"
        with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
            answers = pool.map(send, sent.items())
            wait_until(
                lambda: len(_queued_ids(web_log.read_text())) >= 10, "10 uploads queued", 120
            )
            (web_pid,) = children(stack.pid, "web")
            os.kill(web_pid, signal.SIGKILL)
            list(answers)
        wait_until(lambda: any("web restarted" in line for line in output), "the restart", 120)
        assert stack.poll() is None, "".join(output)
        assert any("restarting it" in line for line in output)
        assert children(stack.pid, "web") != [web_pid]

        queued = _queued_ids(web_log.read_text()) & set(sent)
        assert len(queued) >= 10
        for request_id in queued:
            name, data, ok = sent[request_id]
            result = wait_until(
                lambda rid=request_id: _result(url, rid), f"the result of {request_id}", 120
            )
            assert result["id"] == request_id
            assert result["sha256"] == hashlib.sha256(data).hexdigest(), "another upload's result"
            assert result["label"] in ok, (name, result["label"])
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=90)
        except subprocess.TimeoutExpired:
            stack.kill()


def _result(url: str, request_id: str) -> dict | None:
    response = requests.get(f"{url}/results/{request_id}", timeout=10)
    return response.json() if response.status_code == 200 else None
