"""The web tier wakes the scaler beside it when work reaches an idle fleet (issue 25 item 3).

End to end: moto over HTTP, a real `python -m scaler` whose tick is an hour (so only a wake can
make it decide again within the test), a real web process, a real upload. Unit: the wake
endpoint's answers and the scaler's wait.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from wsgiref.util import setup_testing_defaults

import pytest
import requests

from embedded.stack import python_module, wait_http
from runtime import wake as wake_module
from runtime.wake import TOKEN_HEADER, new_token, read_token, wake_url
from scaler.fleet import ensure_local_launch_template
from scaler.status import status_app
from scaler.wake import Wake
from tests.conftest import IMAGES, free_port
from tests.support.waiting import wait_until

HOUR_S = "3600"


def _status(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _acted(status: dict) -> bool:
    return any(
        (d.get("actions") or {}).get("launch") or (d.get("actions") or {}).get("start")
        for d in status["decisions"]
    )


def test_an_upload_into_an_idle_fleet_wakes_the_scaler_at_once(
    service_factory, aws_client, tmp_path
):
    port = free_port()
    status_url = f"http://127.0.0.1:{port}/status"
    name = tmp_path.name[-12:].replace("_", "-")
    service = service_factory(
        FLEET_NAME=f"{name}-fleet",
        LAUNCH_TEMPLATE=f"{name}-lt",
        SCALER_TICK_S=HOUR_S,  # one tick at start, then only a wake
        SCALER_STATUS_PORT=str(port),
        SCALER_STATUS_URL=status_url,
        SCALER_WAKE_TOKEN_FILE=str(tmp_path / "wake-token"),
    )
    ensure_local_launch_template(aws_client("ec2"), service.settings)
    scaler = service.stack.start("scaler", python_module("scaler"))
    wait_http(status_url, 60, scaler)
    wait_until(lambda: _status(status_url)["decisions"], "the scaler's first tick", 60)
    assert not _acted(_status(status_url))
    web = service.start_web()

    # A stranger's wake (no token, a wrong one) is refused and wakes nothing.
    for token in (None, "guess"):
        request = urllib.request.Request(
            wake_url(status_url),
            method="POST",
            data=b"",
            headers={TOKEN_HEADER: token} if token else {},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback
        assert refused.value.code == 403
        assert len(json.loads(refused.value.read())) == 1  # one line: {"error": ...}

    photo = next(p for p in sorted(IMAGES.iterdir()) if p.suffix == ".jpg")
    response = requests.post(
        f"{web}/upload",
        files={"myfile": (photo.name, photo.read_bytes(), "application/octet-stream")},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert response.status_code == 202, response.text

    def woken() -> dict | None:
        status = _status(status_url)
        return status if _acted(status) else None

    status = wait_until(woken, "the woken decision", 60)
    acted = next(d for d in status["decisions"] if (d.get("actions") or {}).get("launch"))
    assert acted["inputs"]["visible"] + acted["inputs"]["in_flight"] >= 1, acted


def _call(app, method: str, path: str, headers: dict | None = None) -> tuple[str, bytes]:
    environ: dict = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO()}
    for key, value in (headers or {}).items():
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    answer = {}

    def start_response(status, _headers):
        answer["status"] = status

    body = b"".join(app(environ, start_response))
    return answer["status"], body


@pytest.mark.unit
def test_the_wake_endpoint_needs_the_token_and_wakes_only_an_idle_fleet():
    idle = [True]
    wake = Wake(lambda: idle[0])
    app = status_app(lambda: {"ok": True}, wake.wake, "s3cret")
    assert _call(app, "POST", "/wake")[0].startswith("403")
    assert _call(app, "POST", "/wake", {TOKEN_HEADER: "wrong"})[0].startswith("403")
    assert _call(app, "GET", "/wake", {TOKEN_HEADER: "s3cret"})[0].startswith("405")
    assert _call(app, "POST", "/wake", {TOKEN_HEADER: "s3cret"})[0].startswith("204")
    assert wake.wait(0) is True and wake.wait(0) is False  # one wake, one early tick
    idle[0] = False  # something is queued: the tick's cadence already covers it
    assert _call(app, "POST", "/wake", {TOKEN_HEADER: "s3cret"})[0].startswith("202")
    assert wake.wait(0) is False
    assert _call(app, "GET", "/status")[0].startswith("200")


@pytest.mark.unit
def test_without_a_token_file_there_is_no_wake_endpoint():
    app = status_app(lambda: {}, Wake(lambda: True).wake, "")
    assert _call(app, "POST", "/wake", {TOKEN_HEADER: ""})[0].startswith("404")


@pytest.mark.unit
def test_the_wake_url_sits_beside_the_status():
    assert wake_url("http://host.docker.internal:3001/status") == (
        "http://host.docker.internal:3001/wake"
    )


@pytest.mark.unit
def test_the_token_is_given_to_its_owner_before_it_can_be_read(tmp_path, monkeypatch):
    """Compose: the scaler runs as root, the web as 10001; the file is the web's before the rename
    makes it visible (a fake chown: only root may give a file away)."""
    target = tmp_path / "wake-token"
    given = []

    def chown(path, uid, gid):
        assert not target.exists()  # still the temporary
        given.append((path, uid, gid))

    monkeypatch.setattr(wake_module.os, "chown", chown)
    token = new_token(str(target), "10001:10002")
    ((path, uid, gid),) = given
    assert (uid, gid) == (10001, 10002) and path != str(target)
    assert read_token(str(target)) == token and target.stat().st_mode & 0o077 == 0
    given.clear()
    new_token(str(target))  # no owner: the scaler's own user keeps it
    assert given == []
