"""The message schema: round trips, and one typed error for every malformed body."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runtime.keys import staged_key, upload_key
from runtime.messages import (
    IMAGE_FORMATS,
    MAX_FILENAME,
    MessageError,
    Request,
    Result,
    is_request_id,
    salvage,
)

PREFIX = "http://127.0.0.1:4566/123456789012/svc-reply-"
OWN = PREFIX + "abc"
GOOD = {
    "v": 1,
    "id": "a" * 32,
    "key": "uploads/" + "a" * 32,
    "filename": "cat.jpg",
    "reply_to": OWN,
    "deadline": 1e9,
}


def test_request_round_trip():
    request = Request.decode(json.dumps(GOOD), reply_prefix=PREFIX)
    assert Request.decode(request.encode(), reply_prefix=PREFIX) == request


def test_a_request_names_its_model_and_a_result_its_model_and_version():
    plain = Request.decode(json.dumps(GOOD), reply_prefix=PREFIX)
    assert plain.model == "" and "model" not in json.loads(plain.encode())
    named = Request.decode(json.dumps({**GOOD, "model": "catdog"}), reply_prefix=PREFIX)
    assert Request.decode(named.encode(), reply_prefix=PREFIX).model == "catdog"
    result = Result(id="a" * 32, filename="x", model="catdog", version="2", label="cat")
    assert Result.decode(result.encode()).version == "2"


def test_a_request_carries_small_upload_bytes_inline_and_others_stay_as_they_were():
    plain = Request.decode(json.dumps(GOOD), reply_prefix=PREFIX)
    assert plain.inline_bytes() is None
    assert "inline" not in json.loads(plain.encode())  # a plain request is as short as before
    data = bytes(range(256)) * 3 + b"\xff\xd8"
    carrying = Request.decode(plain.with_inline(data, len(data)).encode(), reply_prefix=PREFIX)
    assert carrying.inline_bytes() == data
    assert carrying.key == plain.key  # the stored upload is still named
    assert plain.with_inline(data, len(data) - 1) == plain  # over the limit: fetched instead


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "version"),
        ({"v": None}, "version"),
        ({"id": "../../x"}, "id"),
        ({"id": 5}, "id"),
        ({"key": "uploads/other"}, "key"),
        ({"key": "../secret"}, "key"),
        ({"reply_to": "https://sqs.us-east-1.amazonaws.com/999/attacker"}, "reply_to"),
        ({"reply_to": "file:///etc/passwd#svc-reply-x"}, "reply_to"),
        # Issue 11 finding 9: a matching name in another account or on another path is not ours.
        ({"reply_to": "http://127.0.0.1:4566/999999999999/svc-reply-abc"}, "reply_to"),
        ({"reply_to": OWN + "/../../other"}, "reply_to"),
        ({"reply_to": OWN + "?Action=DeleteQueue"}, "reply_to"),
        ({"reply_to": "http://127.0.0.1:4566/123456789012/other-abc"}, "reply_to"),
        ({"id": "a" * 32 + "\n", "key": "uploads/" + "a" * 32 + "\n"}, "id"),
        ({"deadline": 10**400}, "deadline"),
        ({"deadline": "soon"}, "deadline"),
        ({"deadline": True}, "deadline"),
        ({"inline": "not base64!"}, "inline"),
        ({"inline": "abc"}, "inline"),  # not a whole number of 4-character groups
        ({"inline": 5}, "inline"),
        ({"model": "../x"}, "model"),
        ({"model": "Cat"}, "model"),
        ({"model": 5}, "model"),
    ],
)
def test_request_refuses(change, reason):
    with pytest.raises(MessageError, match=reason):
        Request.decode(json.dumps({**GOOD, **change}), reply_prefix=PREFIX)


@pytest.mark.parametrize(
    "named",
    [
        "http://evil.example/123456789012/svc-reply-abc",  # another host: never sent there
        "https://aws:4566/123456789012/svc-reply-abc",  # the same SQS by another address
    ],
)
def test_reply_goes_to_this_endpoint_whatever_host_the_message_names(named):
    # Issue 11 finding 9: a reply only ever leaves for this worker's own endpoint and account.
    request = Request.decode(json.dumps({**GOOD, "reply_to": named}), reply_prefix=PREFIX)
    assert request.reply_to == OWN


@pytest.mark.parametrize("body", ["", "not json", "[]", "null", '"x"'])
def test_garbage_is_one_typed_error(body):
    with pytest.raises(MessageError):
        Request.decode(body)
    with pytest.raises(MessageError):
        Result.decode(body)


def test_long_filename_is_bounded():
    request = Request.decode(json.dumps({**GOOD, "filename": "x" * 5000}))
    assert len(request.filename) == 255


def test_result_round_trip_and_ok():
    result = Result(
        id="b" * 32, filename="f.jpg", label="tabby", top5=[{"label": "tabby", "score": 0.9}]
    )
    assert Result.decode(result.encode()) == result and result.ok
    assert not Result(id="b" * 32, filename="f", error="cannot decode").ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a" * 32, True),
        ("0123456789abcdef" * 2, True),
        ("a" * 32 + "\n", False),  # "^...$" with re.match would accept this one
        ("A" * 32, False),
        ("a" * 31, False),
        ("a" * 33, False),
        ("", False),
        (None, False),
    ],
)
def test_request_id_is_exactly_32_lowercase_hex_digits(value, ok):
    assert is_request_id(value) is ok


def test_request_id_with_a_trailing_newline_is_refused_in_a_message():
    with pytest.raises(MessageError, match="id"):
        Request.decode(json.dumps({**GOOD, "id": "a" * 32 + "\n"}))


def test_create_keys_the_upload_by_its_id():
    request = Request.create("c" * 32, "cat.jpg", OWN, 1e9)
    assert request.key == upload_key("c" * 32)
    assert Request.decode(request.encode(), reply_prefix=PREFIX) == request


def test_salvage_keeps_a_sound_id_and_own_reply_queue():
    body = json.dumps({**GOOD, "v": 99, "key": "../secret", "filename": "y" * 999})
    salvaged = salvage(body, PREFIX)
    assert salvaged is not None
    assert (salvaged.id, salvaged.reply_to, salvaged.key) == (
        GOOD["id"],
        OWN,
        upload_key(GOOD["id"]),
    )
    assert len(salvaged.filename) == MAX_FILENAME


REFUSED_ITEM = {**GOOD, "reply_to": "", "job": "b" * 32, "index": 4, "key": "albums/cat.jpg"}


def test_salvage_keeps_a_refused_job_images_job_and_index():
    """Its failed row is the job's, not a result under its own id nobody asks for."""
    salvaged = salvage(json.dumps(REFUSED_ITEM), PREFIX)
    assert salvaged is not None
    assert (salvaged.id, salvaged.job, salvaged.index) == (GOOD["id"], "b" * 32, 4)
    assert salvaged.key == staged_key("b" * 32, 4)  # never read: the error is its result


@pytest.mark.parametrize(
    "job",
    [{"job": "../x"}, {"job": 5}, {"index": -1}, {"index": "4"}, {"index": True}, {"index": 1.5}],
)
def test_salvage_gives_nothing_for_a_job_image_without_a_sound_place(job):
    assert salvage(json.dumps({**REFUSED_ITEM, **job}), PREFIX) is None


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({**GOOD, "id": "../x"}),
        json.dumps({**GOOD, "id": 5}),
        json.dumps({**GOOD, "reply_to": "https://sqs.us-east-1.amazonaws.com/999/attacker"}),
        json.dumps({"id": GOOD["id"]}),
    ],
)
def test_salvage_gives_nothing_without_someone_safe_to_tell(body):
    assert salvage(body, PREFIX) is None


@pytest.mark.e2e  # starts processes
def test_image_formats_are_known_without_torch():
    # The web tier checks uploads against these; importing them must not load the model stack.
    code = "import sys, runtime.messages; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert IMAGE_FORMATS >= {"jpeg", "png"}


JOB_ITEM = {**GOOD, "reply_to": "", "job": "f" * 32, "index": 3, "key": staged_key("f" * 32, 3)}
ALLOWED = ("photos/",)  # as Settings.job_source_prefixes gives them


def test_async_and_job_requests_round_trip():
    asynchronous = Request.decode(json.dumps({**GOOD, "reply_to": ""}), reply_prefix="svc-reply-")
    assert asynchronous.is_async and not asynchronous.reply_to
    item = Request.decode(json.dumps(JOB_ITEM), reply_prefix="svc-reply-")
    assert (item.job, item.index, item.is_async) == ("f" * 32, 3, False)
    assert Request.decode(item.encode()) == item
    listed = {**JOB_ITEM, "key": "photos/2024/cat.jpg"}
    assert Request.decode(json.dumps(listed), job_prefixes=ALLOWED).key == "photos/2024/cat.jpg"


@pytest.mark.parametrize(
    "key",
    [
        "photos/cat.jpg",  # no prefix allowed: only the job's own staged input
        staged_key("e" * 32, 3),  # another job's staged image
        staged_key("f" * 32, 4),  # this job's, but another index
        "jobs/" + "f" * 32 + "/in/",
        "results/" + "a" * 32 + ".json",
        "cache/m/p/x.json",
    ],
)
def test_a_job_item_reads_only_its_own_staged_input_without_an_allowed_prefix(key):
    with pytest.raises(MessageError, match="key"):
        Request.decode(json.dumps({**JOB_ITEM, "key": key}))


@pytest.mark.parametrize(
    "key",
    [
        "photosX/cat.jpg",
        "photos",
        "photos//x.jpg",
        "photos/../uploads/x",
        "photos/./x",
        "x/photos/",
    ],
)
def test_an_allowed_prefix_covers_whole_segments_only(key):
    with pytest.raises(MessageError, match="key"):
        Request.decode(json.dumps({**JOB_ITEM, "key": key}), job_prefixes=ALLOWED)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"job": "../x"}, "job"),
        ({"job": 7}, "job"),
        ({"index": -1}, "index"),
        ({"index": "2"}, "index"),
        ({"reply_to": OWN}, "reply_to"),
        ({"key": "uploads/" + "a" * 32}, "key"),
        ({"key": "photos/cat.jpg"}, "key"),
        ({"key": "a/../../etc"}, "key"),
        ({"key": ""}, "key"),
    ],
)
def test_job_item_refuses(change, reason):
    with pytest.raises(MessageError, match=reason):
        Request.decode(json.dumps({**JOB_ITEM, **change}), reply_prefix="svc-reply-")
