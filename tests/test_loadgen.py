"""The load generator as users run it: `python -m loadgen` in a subprocess against a real local
HTTP server (Falcon on Waitress) that speaks the course's protocol."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import falcon
import pytest
import waitress.server
from PIL import Image
from waitress import wasyncore

from loadgen.client import Reply, parse_label
from loadgen.inputs import Image as InputImage
from loadgen.inputs import InputError, accepted_labels, load_expected
from loadgen.uploads import Uploads, marked
from tests.conftest import IMAGES
from tests.support.loadgen import loadgen

pytestmark = pytest.mark.e2e  # starts processes (or reads built images)

REPO = Path(__file__).resolve().parent.parent
LABELS = {"test_0": "bathtub", "test_1": "cat", "test_2": "dog", "test_3": "zebra", "test_4": "fox"}
FAILING = "test_3"  # the server answers 500 for this one
RESULT_COLUMNS = ["start_time", "filename", "status", "latency_ms", "label", "correct"]


# --- the server under test -------------------------------------------------------------------


class FakeClassifier:
    """Answers `stem:label` for the images it knows, byte for byte, and 500 for FAILING."""

    def __init__(self, images: dict[str, bytes], field: str):
        self._images = images
        self._field = field
        self._lock = threading.Lock()
        self.received: list[str] = []
        self.bodies: list[bytes] = []
        self.client_ports: set[str] = set()
        self.last_post = 0.0

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        filename, data = None, b""
        for part in req.get_media():
            if part.name == self._field:
                filename, data = part.filename, part.stream.read()
                break
            part.stream.read()
        if filename is None or not same_picture(self._images.get(filename), data):
            raise falcon.HTTPBadRequest(description="unknown file or a different picture")
        with self._lock:
            self.received.append(filename)
            self.client_ports.add(req.env["REMOTE_PORT"])
            # Like the service's result cache: bytes seen before are a hit.
            resp.set_header("X-Cache", "hit" if data in self.bodies else "miss")
            self.bodies.append(data)
            self.last_post = time.monotonic()
        time.sleep(0.005)  # keeps --duration runs to a modest number of requests
        stem = filename.rsplit(".", 1)[0]
        if stem == FAILING:
            raise falcon.HTTPInternalServerError()
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"{stem}:{LABELS[stem]}"


class FakeStatus:
    def __init__(self, classifier: FakeClassifier):
        self._classifier = classifier

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        served = len(self._classifier.received)
        # Like the scaler: the fleet stops (scales in) once uploads have been quiet a while.
        last = self._classifier.last_post
        idle = last > 0 and time.monotonic() - last > 1.0
        running, pending = (0, 0) if idle else (1 + served // 4, 1)
        resp.media = {
            "queue": {"visible": 0, "in_flight": served % 3},
            "fleet": {"pending": pending, "running": running, "stopping": 0, "stopped": 0},
            "web": {"id": "fake"},
        }


def same_picture(known: bytes | None, data: bytes) -> bool:
    if known is None:
        return False
    if known == data:
        return True
    with Image.open(io.BytesIO(known)) as a, Image.open(io.BytesIO(data)) as b:
        return a.tobytes() == b.tobytes() and a.size == b.size


def make_images(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for i, stem in enumerate(LABELS):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (40 * i, 255 - 40 * i, 90)).save(buffer, format="PNG")
        images[f"{stem}.png"] = buffer.getvalue()
        (folder / f"{stem}.png").write_bytes(buffer.getvalue())
    (folder / "notes.txt").write_text("not an image\n")  # must be skipped
    return images


class Server:
    def __init__(self, images: dict[str, bytes], field: str = "myfile", status: bool = True):
        self.classifier = FakeClassifier(images, field)
        app = falcon.App()
        app.add_route("/upload", self.classifier)
        app.add_route("/", self.classifier)
        if status:
            app.add_route("/status", FakeStatus(self.classifier))
        self._map: dict = {}  # Waitress's socket map, ours so the loop below can drive it
        self._server = waitress.server.create_server(
            app, map=self._map, host="127.0.0.1", port=0, threads=8
        )
        self.url = f"http://127.0.0.1:{self._server.effective_port}/upload"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # Server.run() cannot be stopped from another thread without closing sockets under its
        # select(); this loop stops itself, then closes everything in its own thread.
        while not self._stop.is_set():
            wasyncore.loop(timeout=0.05, map=self._map, count=1)
        self._server.task_dispatcher.shutdown()
        wasyncore.close_all(self._map)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "images"


@pytest.fixture
def server(folder):
    srv = Server(make_images(folder))
    yield srv
    srv.close()


@pytest.fixture
def course_server(folder):
    """Like the course's servers: field inputFile, no /status."""
    srv = Server(make_images(folder), field="inputFile", status=False)
    yield srv
    srv.close()


def json_summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == RESULT_COLUMNS
        return list(reader)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


# --- runs against the server -----------------------------------------------------------------


def test_counts_errors_accuracy_results_and_report(server, folder, tmp_path):
    expected = tmp_path / "expected.csv"
    # The course's header; test_2's expectation is deliberately wrong to score one miss.
    expected.write_text("Image,Results\ntest_0,bathtub\ntest_1,cat\ntest_2,wolf\ntest_4,fox\n")
    out = tmp_path / "out"
    args = ["--num_request", "10", "--concurrency", "3", "--url", server.url]
    args += ["--image_folder", str(folder), "--expected", str(expected), "--out", str(out)]
    summary = json_summary(loadgen(*args, "--json"))

    assert summary["requests"] == 10
    assert summary["ok"] == 8
    assert summary["errors"] == {"500": 2}
    assert summary["accuracy"] == {"correct": 6, "scored": 8, "ratio": 0.75}
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["peak_running"] >= 1
    # Each image twice, the bytes checked by the server (a mismatch would be a 400).
    assert Counter(server.classifier.received) == {f"{stem}.png": 2 for stem in LABELS}
    assert len(server.classifier.client_ports) <= 3  # keep-alive: a connection per thread

    rows = read_rows(out / "results.csv")
    assert len(rows) == 10
    assert Counter(row["filename"] for row in rows) == {f"{stem}.png": 2 for stem in LABELS}
    for row in rows:
        stem = row["filename"].removesuffix(".png")
        assert float(row["latency_ms"]) > 0 and float(row["start_time"]) > 1e9
        if stem == FAILING:
            assert (row["status"], row["label"], row["correct"]) == ("500", "", "")
        else:
            want = "false" if stem == "test_2" else "true"
            assert (row["status"], row["label"], row["correct"]) == ("200", LABELS[stem], want)
    assert_png(out / "report.png")
    assert summary["cached"] == 4  # each answered image's second sending: bytes seen before
    fleet = list(csv.DictReader((out / "fleet.csv").open(newline="")))
    assert fleet and int(fleet[0]["pending"]) == 1
    # Sampled on after the last answer until the fleet scaled in.
    last_answer = max(float(r["start_time"]) + float(r["latency_ms"]) / 1000 for r in rows)
    assert int(fleet[-1]["running"]) == 0 and int(fleet[-1]["pending"]) == 0
    assert float(fleet[-1]["offset_s"]) > last_answer - float(rows[0]["start_time"])


def test_unique_sends_distinct_bytes_of_the_same_pictures(server, folder):
    args = ["--num_request", "15", "--url", server.url, "--image_folder", str(folder)]
    proc = loadgen(*args, "--unique", "--watch_after", "0")
    assert proc.returncode == 0, proc.stderr
    assert "cache         0 answered from the cache" in proc.stdout.splitlines()
    # Every body differs, and the server decoded each as one of the known pictures.
    assert len(set(server.classifier.bodies)) == len(server.classifier.received) == 15
    assert Counter(server.classifier.received) == {f"{stem}.png": 3 for stem in LABELS}
    # A second run repeats none of the first run's bytes: the cache cannot answer it either.
    again = loadgen(*args, "--unique", "--watch_after", "0")
    assert "cache         0 answered from the cache" in again.stdout.splitlines()
    assert len(set(server.classifier.bodies)) == 30


def test_course_style_command_prints_each_reply_and_a_table(course_server, folder, tmp_path):
    out = tmp_path / "out"
    proc = loadgen(
        "--num_request", "5", "--url", course_server.url, "--image_folder", str(folder),
        "--field", "inputFile", "--print_replies", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    replies = {f"{stem}:{label}" for stem, label in LABELS.items() if stem != FAILING}
    assert replies | {f"{FAILING}.png: 500"} <= set(lines)
    assert "requests      5 (4 ok)" in lines
    assert "errors        500: 1" in lines
    assert not any(line.startswith(("accuracy", "peak workers")) for line in lines)
    assert len(read_rows(out / "results.csv")) == 5
    assert_png(out / "report.png")
    assert not (out / "fleet.csv").exists()  # no /status, so no fleet


def test_without_a_bound_each_image_is_sent_once(server, folder):
    summary = json_summary(loadgen("--url", server.url, "--image_folder", str(folder), "--json"))
    assert summary["requests"] == 5
    assert sorted(server.classifier.received) == sorted(f"{stem}.png" for stem in LABELS)
    assert summary["accuracy"] is None


def test_duration_closed_loop_with_json_labels(server, folder, tmp_path):
    labels = tmp_path / "labels.json"
    # Several accepted labels per file, keyed by full name or by stem.
    labels.write_text(json.dumps({"test_0.png": ["bathtub", "tub"], "test_2": ["wolf", "dog"]}))
    out = tmp_path / "out"
    args = ["--duration", "0.5", "--concurrency", "2", "--url", server.url]
    args += ["--image_folder", str(folder), "--expected", str(labels), "--out", str(out)]
    summary = json_summary(loadgen(*args, "--json"))

    assert summary["requests"] >= 1
    assert summary["requests"] == len(server.classifier.received)
    assert summary["ok"] + sum(summary["errors"].values()) == summary["requests"]
    assert set(summary["errors"]) <= {"500"}
    rows = read_rows(out / "results.csv")
    assert len(rows) == summary["requests"]
    scored = [r for r in rows if r["filename"] in ("test_0.png", "test_2.png")]
    assert summary["accuracy"]["scored"] == len(scored)
    assert summary["accuracy"]["correct"] == len(scored)
    assert all(r["correct"] == "" for r in rows if r not in scored)


def test_open_loop_rate(server, folder):
    args = ["--rate", "50", "--num_request", "12", "--url", server.url]
    summary = json_summary(loadgen(*args, "--image_folder", str(folder), "--json"))
    # Images are cycled in order: test_3 is request 3 and request 8.
    assert (summary["requests"], summary["ok"], summary["errors"]) == (12, 10, {"500": 2})
    assert len(server.classifier.received) == 12


@pytest.mark.parametrize(
    ("behaviour", "status"), [("hang up", "conn_error"), ("say nothing", "timeout")]
)
def test_requests_without_a_reply_are_counted_by_cause(behaviour, status, folder):
    make_images(folder)
    # Reachable (it accepts connections), yet no request ever gets a reply.
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if behaviour == "hang up":
                conn.close()
            else:
                held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/upload"
    try:
        proc = loadgen(
            "-n", "3", "-c", "3", "--timeout", "0.5", "--url", url,
            "--image_folder", str(folder), "--json",
        )  # fmt: skip
    finally:
        listener.close()
        for conn in held:
            conn.close()
    summary = json_summary(proc)
    assert (summary["requests"], summary["ok"], summary["errors"]) == (3, 0, {status: 3})
    assert summary["latency_ms"] is None


# --- bad input: one line on stderr, a non-zero exit, no traceback ----------------------------


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/upload"


BAD_INPUTS = {  # options over a good default command line, and a word of the message
    "unreachable url": ({"--url": "{closed}"}, "cannot reach"),
    "missing folder": ({"--image_folder": "{tmp}/nope"}, "not found"),
    "empty folder": ({"--image_folder": "{tmp}/empty"}, "no image files"),
    "no images in folder": ({"--image_folder": "{tmp}/text"}, "no image files"),
    "negative rate": ({"--rate": "-1"}, "--rate"),
    "zero rate": ({"--rate": "0"}, "--rate"),
    "rate not a number": ({"--rate": "fast"}, "--rate"),
    "num_request and duration": ({"--duration": "1"}, "not allowed"),
    "zero num_request": ({"--num_request": "0"}, "--num_request"),
    "zero concurrency": ({"--concurrency": "0"}, "--concurrency"),
    "not an http url": ({"--url": "ftp://127.0.0.1/upload"}, "--url"),
    "missing expected file": ({"--expected": "{tmp}/none.csv"}, "not found"),
    "bad expected json": ({"--expected": "{tmp}/bad.json"}, "not valid JSON"),
    "unknown option": ({"--bogus": "1"}, "unrecognized"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_with_one_line(case, server, folder, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello\n")
    (tmp_path / "bad.json").write_text("{not json")
    overrides, message = BAD_INPUTS[case]
    options = {"--url": server.url, "--image_folder": str(folder), "--num_request": "1"}
    options |= {k: v.format(tmp=tmp_path, closed=closed_port_url()) for k, v in overrides.items()}
    proc = loadgen(*(arg for pair in options.items() for arg in pair))

    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("loadgen: error:") and message in lines[0]
    assert server.classifier.received == []


# --- the pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "body", "label"),
    [
        ("test_0.jpg", "text/plain", b"test_0:bathtub", "bathtub"),
        ("a:b.jpg", "text/plain", b"a:b:tabby cat\n", "tabby cat"),  # colon in the stem
        ("x.jpg", "text/plain; charset=utf-8", b"renamed:goldfish", "goldfish"),
        ("x.jpg", "application/json", b'{"id":"1","label":"tench","top5":[]}', "tench"),
        ("x.jpg", "text/plain", b"no colon here", "no colon here"),
    ],
)
def test_parse_label(filename, content_type, body, label):
    assert parse_label(filename, Reply(200, content_type, body)) == label


@pytest.mark.parametrize(
    "text",
    ["Image,Results\ntest_0,Paul\ntest_1,Emma\n", "test_0,Paul\ntest_1,Emma\n\n"],
    ids=["with header", "without header"],
)
def test_expected_csv_with_or_without_header(tmp_path, text):
    path = tmp_path / "expected.csv"
    path.write_text(text)
    expected = load_expected(path)
    assert expected == {"test_0": {"Paul"}, "test_1": {"Emma"}}
    assert accepted_labels(expected, "test_0.jpg") == {"Paul"}
    assert accepted_labels(expected, "test_9.jpg") is None


def test_expected_csv_row_without_label_is_an_input_error(tmp_path):
    path = tmp_path / "expected.csv"
    path.write_text("Image,Results\ntest_0\n")
    with pytest.raises(InputError, match="row 1 needs two columns"):
        load_expected(path)


# --- --unique's marks ------------------------------------------------------------------------


def test_marks_change_the_bytes_and_keep_the_pixels():
    photo = (IMAGES / "chelsea.jpg").read_bytes()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").resize((40, 30)).save(buffer, format="PNG")
    for original in (photo, buffer.getvalue()):
        copies = [marked(original, serial) for serial in ("a-0", "a-1", "b-0")]
        assert len({original, *copies}) == 4
        for copy in copies:
            assert same_picture(original, copy)
            with Image.open(io.BytesIO(copy)) as image:
                image.verify()  # PNG: every chunk's CRC checked


def test_unique_refuses_images_it_cannot_mark():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")
    gif = InputImage("a.gif", buffer.getvalue())
    assert Uploads("myfile", (gif,), unique=False)(3).filename == "a.gif"
    with pytest.raises(InputError, match="JPEG and PNG images only, not a.gif"):
        Uploads("myfile", (gif,), unique=True)
