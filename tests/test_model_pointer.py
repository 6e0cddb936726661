"""A versionless S3 entry of MODELS (s3://BUCKET/models/NAME/) at unit level: the pointer
models/NAME/CURRENT read conditionally and at most every check_s (worker.sources), the rollout
following it (worker.served.Rollout), and `publish` (worker.remote), on an in-memory S3 and a
fake clock. The switch under load on real processes: tests/test_custom_models.py."""

from __future__ import annotations

import json
import logging

import pytest
from botocore.exceptions import EndpointConnectionError

from runtime.keys import followed_model, model_package_prefix, model_pointer_key
from tests.support.clock import Clock
from tests.support.stub_s3 import StubS3
from worker.package import PackageError, Preprocessing, Unreadable, write_package
from worker.remote import FILES, publish
from worker.served import Rollout, Served, ServedModels
from worker.sources import Pointer, watched

pytestmark = pytest.mark.unit

BUCKET = "in"
AREA = f"s3://{BUCKET}/models/catdog/"


def _point(s3: StubS3, version: str | bytes) -> None:
    body = version if isinstance(version, bytes) else f"{version}\n".encode()
    s3.objects[BUCKET, model_pointer_key("catdog")] = body


def _version_url(version: str) -> str:
    return f"s3://{BUCKET}/{model_package_prefix('catdog', version)}"


@pytest.mark.parametrize(
    "url, followed",
    [
        ("s3://in/models/catdog/", ("in", "catdog")),
        ("s3://in/models/catdog", ("in", "catdog")),  # as MODELS spells it without the slash
        ("s3://in/models/catdog/2/", None),  # a version: it never changes
        ("s3://in/models/", None),
        ("s3://in/uploads/catdog/", None),
        ("/models/catdog", None),
    ],
)
def test_only_a_model_area_without_a_version_follows_a_pointer(url, followed):
    assert followed_model(url) == followed


def test_the_pointer_is_read_once_per_interval_and_then_only_if_it_changed():
    s3, clock = StubS3(), Clock()
    _point(s3, "1")
    pointer = Pointer(s3, BUCKET, "catdog", check_s=10, clock=clock)
    assert pointer.target() == _version_url("1")
    clock.now += 9
    assert pointer.target() == _version_url("1")
    assert len(s3.gets) == 1  # within the interval: no request at all

    calls = []
    get = s3.get_object
    s3.get_object = lambda **kwargs: calls.append(kwargs) or get(**kwargs)
    clock.now += 1
    assert pointer.target() == _version_url("1")  # S3 said 304: the version read before
    assert calls == [
        {
            "Bucket": BUCKET,
            "Key": "models/catdog/CURRENT",
            "IfNoneMatch": s3.etag(BUCKET, "models/catdog/CURRENT"),
        }
    ]

    _point(s3, "2")
    assert pointer.target() == _version_url("1")  # published, but read at the next interval
    clock.now += 10
    assert pointer.target() == _version_url("2")


@pytest.mark.parametrize(
    "body, line",
    [
        (None, "s3://in/models/catdog/CURRENT does not exist"),
        (b"", "s3://in/models/catdog/CURRENT names no version: ''"),
        (b"..\n", "s3://in/models/catdog/CURRENT names no version: '..'"),
        (b"2/../../x", "s3://in/models/catdog/CURRENT names no version: '2/../../x'"),
        (b"7" * 300, "s3://in/models/catdog/CURRENT names no version: '" + "7" * 64 + "'"),
    ],
)
def test_a_missing_or_malformed_pointer_is_one_line(body, line):
    s3 = StubS3()
    if body is not None:
        _point(s3, body)
    with pytest.raises(PackageError) as refused:
        Pointer(s3, BUCKET, "catdog", check_s=10).target()
    assert str(refused.value) == line


def test_a_pointer_s3_does_not_answer_for_is_unreadable_and_read_again_after_the_interval():
    s3, clock = StubS3(), Clock()
    _point(s3, "1")
    pointer = Pointer(s3, BUCKET, "catdog", check_s=10, clock=clock)
    pointer.target()
    get = s3.get_object

    def down(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://s3")

    s3.get_object = down
    clock.now += 10
    with pytest.raises(Unreadable, match="CURRENT cannot be read: EndpointConnectionError"):
        pointer.target()
    assert pointer.target() == _version_url("1")  # until the next interval: the last one read
    s3.get_object = get
    _point(s3, "2")
    clock.now += 10
    assert pointer.target() == _version_url("2")


def test_each_entry_that_can_change_is_watched_and_a_version_is_not(tmp_path):
    (tmp_path / "catdog-1").mkdir()
    (tmp_path / "catdog").symlink_to(tmp_path / "catdog-1")
    s3 = StubS3()
    _point(s3, "3")
    found = watched(
        {
            "local": str(tmp_path / "catdog"),
            "catdog": AREA,
            "fixed": "s3://in/models/fixed/1/",
        },
        s3,
        check_s=10,
    )
    assert sorted(found) == ["catdog", "local"]
    assert found["local"]() == str(tmp_path / "catdog-1")
    assert found["catdog"]() == _version_url("3")


class Named:
    def __init__(self, name: str, version: str):
        self.name, self.version, self.min_side = name, version, 256


class Refused(Exception):
    pass


class NotNow(Refused):
    pass


def test_the_rollout_follows_the_pointer_refuses_a_bad_version_once_and_retries_an_unread_one(
    caplog,
):
    caplog.set_level(logging.INFO)
    s3, clock = StubS3(), Clock()
    _point(s3, "1")
    pointer = Pointer(s3, BUCKET, "catdog", check_s=10, clock=clock)
    loads, unreachable = [], {"4"}

    def load(name, url):
        loads.append(url)
        version = url.rstrip("/").rsplit("/", 1)[-1]
        if version == "9":
            raise Refused(f"{url}manifest.json does not exist")
        if version in unreachable:
            raise NotNow(f"{url}model.onnx cannot be read: timeout")
        return Named(name, version)

    models = ServedModels(
        Served(Named("default", "x"), str), {"catdog": Served(Named("catdog", "1"), str)}
    )
    rollout = Rollout(
        models,
        {"catdog": pointer.target},
        load,
        (Refused, PackageError),
        serving={"catdog": pointer.target()},
        retried=(NotNow,),
    )

    def look(version: str | bytes | None, looks: int = 2) -> None:
        if version is None:
            s3.objects.pop((BUCKET, model_pointer_key("catdog")))
        else:
            _point(s3, version)
        for _ in range(looks):  # each a rollout tick, the pointer read anew at each
            clock.now += 10
            rollout.check()

    look("2")
    assert models.get("catdog").classifier.version == "2"
    look("9")  # no such version: refused once, 2 keeps serving
    look(b"not a version!")
    look(None)  # the pointer went: said once, 2 keeps serving
    look("4")  # not readable now: not refused, tried at each look
    assert models.get("catdog").classifier.version == "2"
    unreachable.clear()
    look("4", looks=1)
    assert models.get("catdog").classifier.version == "4"
    assert loads == [_version_url(v) for v in ("2", "9", "4", "4", "4")]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    kept = f"{_version_url('2')} keeps serving"
    assert lines == [
        f"model catdog: {_version_url('9')} refused ({_version_url('9')}manifest.json does not"
        f" exist); {kept}",
        f"model catdog: s3://in/models/catdog/CURRENT names no version: 'not a version!'; {kept}",
        f"model catdog: s3://in/models/catdog/CURRENT does not exist; {kept}",
        f"model catdog: {_version_url('4')} not loaded now ({_version_url('4')}model.onnx cannot"
        f" be read: timeout); tried again at the next look; {kept}",
    ]


def _upload(s3: StubS3, tmp_path, version: str, *, name: str = "catdog", under: str = "") -> None:
    tmp_path.mkdir(exist_ok=True)
    artefact = tmp_path / "net.onnx"
    artefact.write_bytes(b"an artefact: publish reads a package, it does not run it")
    root = tmp_path / f"{name}-{version}"
    write_package(
        root, artefact, ["cat", "dog"], name=name, version=version, preprocessing=Preprocessing()
    )
    (root / "reference.json").write_text(json.dumps({}))
    prefix = model_package_prefix("catdog", under or version)
    for file in FILES:
        s3.objects[BUCKET, prefix + file] = (root / file).read_bytes()


def test_publish_writes_the_pointer_once_the_version_is_whole(tmp_path):
    s3 = StubS3()
    _upload(s3, tmp_path, "1")
    package, before = publish(s3, AREA, "1")
    assert (package.manifest.version, before) == ("1", "")
    assert s3.objects[BUCKET, "models/catdog/CURRENT"] == b"1\n"
    _upload(s3, tmp_path, "2")
    assert publish(s3, AREA, "2")[1] == "1"
    assert Pointer(s3, BUCKET, "catdog", check_s=10).target() == _version_url("2")


@pytest.mark.parametrize(
    "url, version, line",
    [
        (AREA, "9", "s3://in/models/catdog/9/manifest.json does not exist"),
        (AREA, "3", "s3://in/models/catdog/3/ holds catdog version 2, not catdog version 3"),
        (AREA, "4", "s3://in/models/catdog/4/ holds dogcat version 4, not catdog version 4"),
        (AREA, "5", "s3://in/models/catdog/5/reference.json does not exist"),
        (AREA, "6", "model.onnx does not match the sha256 in manifest.json"),
        (AREA, "..", "--version '..' is not a version (letters, digits, . _ -; no leading .)"),
        (AREA, "2/x", "--version '2/x' is not a version (letters, digits, . _ -; no leading .)"),
        (
            "s3://in/models/catdog/2/",
            "2",
            "s3://in/models/catdog/2/ is not s3://BUCKET/models/NAME/ (a model, not a version)",
        ),
        ("catdog", "2", "catdog is not s3://BUCKET/models/NAME/ (a model, not a version)"),
        (
            "s3://in/models/Cat/",
            "2",
            "'Cat' is not a model name (lowercase letters, digits, . _ -)",
        ),
    ],
)
def test_publish_refuses_what_is_not_a_whole_package_of_that_version_with_one_line(
    tmp_path, url, version, line
):
    s3 = StubS3()
    _upload(s3, tmp_path / "a", "2")
    _upload(s3, tmp_path / "b", "2", under="3")  # version 2's package under prefix 3
    _upload(s3, tmp_path / "c", "4", name="dogcat")
    _upload(s3, tmp_path / "d", "5")
    del s3.objects[BUCKET, "models/catdog/5/reference.json"]
    _upload(s3, tmp_path / "e", "6")
    s3.objects[BUCKET, "models/catdog/6/model.onnx"] += b"changed"
    _point(s3, "2")
    with pytest.raises(PackageError) as refused:
        publish(s3, url, version)
    assert line in str(refused.value) and "\n" not in str(refused.value)
    assert s3.objects[BUCKET, "models/catdog/CURRENT"] == b"2\n"  # nothing written
