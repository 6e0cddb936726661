"""The embedded stack keeps the scaler's estimates across `make up` runs (moto forgets them)."""

from __future__ import annotations

import argparse
import json

from embedded.__main__ import cmd_forget
from embedded.kept import KeptEstimates, kept_path
from runtime import keys

BUCKET = "kept-out"


def _bucket(in_process_aws, name: str):
    s3 = in_process_aws("s3")
    s3.create_bucket(Bucket=name)
    return s3


def test_what_one_run_measured_is_back_in_the_next_runs_fresh_bucket(in_process_aws, tmp_path):
    s3 = _bucket(in_process_aws, BUCKET)
    first = KeptEstimates(kept_path(tmp_path), s3, BUCKET)
    assert not first.restore()  # the first run: nothing kept, the scaler starts from defaults
    assert not first.save()  # nothing measured yet: no file
    assert not kept_path(tmp_path).exists()
    measured = {"version": 1, "boot_s": {"?": {"new": [4.2]}}, "throughput_img_s": {"m": 30.0}}
    s3.put_object(Bucket=BUCKET, Key=keys.SCALER_ESTIMATES, Body=json.dumps(measured).encode())
    assert first.save()
    assert not first.save()  # unchanged: not written again
    assert json.loads(kept_path(tmp_path).read_text()) == measured

    # The next run: a new moto, so an empty bucket; the copy goes back before the scaler starts.
    fresh = _bucket(in_process_aws, f"{BUCKET}-2")
    assert KeptEstimates(kept_path(tmp_path), fresh, f"{BUCKET}-2").restore()
    body = fresh.get_object(Bucket=f"{BUCKET}-2", Key=keys.SCALER_ESTIMATES)["Body"].read()
    assert json.loads(body) == measured


def test_forget_deletes_the_copy_and_says_so(tmp_path, capsys):
    kept_path(tmp_path).write_text("{}")
    assert cmd_forget(argparse.Namespace(log_dir=str(tmp_path)), None) == 0
    assert not kept_path(tmp_path).exists()
    assert "forgot the measured estimates" in capsys.readouterr().out
    assert cmd_forget(argparse.Namespace(log_dir=str(tmp_path)), None) == 0
    assert "nothing kept" in capsys.readouterr().out
