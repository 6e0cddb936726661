"""worker.served.Rollout at unit level: real symbolic links in a temporary directory, a stand-in
loader. The rollout under load on real processes: tests/test_custom_models.py."""

from __future__ import annotations

import os

import pytest

from worker.served import Rollout, Served, ServedModels, over_bound
from worker.sources import watched

pytestmark = pytest.mark.unit


class Named:
    def __init__(self, name: str, version: str, artefact_bytes: int = 0):
        self.name, self.version, self.min_side = name, version, 256
        self.artefact_bytes = artefact_bytes


class Refused(Exception):
    pass


def _link(tmp_path, target: str):
    link = tmp_path / "catdog"
    tmp = tmp_path / ".catdog-new"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(tmp_path / target)
    os.replace(tmp, link)  # what `ln -sfn` does: the link changes whole
    return link


def _links(link) -> dict:
    """What the worker watches of MODELS=catdog=<link>: where the link points now."""
    return watched({"catdog": str(link)}, s3=None, check_s=10)


def test_a_new_target_is_served_once_loaded_and_a_bad_one_is_refused_once(tmp_path, caplog):
    for version in ("1", "2", "3"):
        (tmp_path / f"catdog-{version}").mkdir()
    link = _link(tmp_path, "catdog-1")
    loads = []

    def load(name, path):
        loads.append(path)
        if path.endswith("3"):
            raise Refused("model.onnx does not match the sha256 in manifest.json")
        return Named(name, path.rsplit("-", 1)[-1])

    models = ServedModels(
        Served(Named("default", "x"), str), {"catdog": Served(Named("catdog", "1"), str)}
    )
    switched = []  # what the worker's retag would say, at each switch
    told = lambda: switched.append([c.version for c in models.classifiers()])  # noqa: E731
    rollout = Rollout(models, _links(link), load, (Refused,), on_switch=told)
    held = models.get("catdog")
    rollout.check()
    assert loads == [] and models.get("catdog") is held  # nothing new: nothing loaded

    _link(tmp_path, "catdog-2")
    rollout.check()
    assert models.get("catdog").classifier.version == "2"
    assert held.classifier.version == "1"  # what a request in flight holds is not changed

    _link(tmp_path, "catdog-3")
    rollout.check()
    rollout.check()  # refused once, not at every look
    assert loads == [str(tmp_path / "catdog-2"), str(tmp_path / "catdog-3")]
    assert models.get("catdog").classifier.version == "2"
    (refusal,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "does not match the sha256" in refusal and refusal.endswith("catdog-2 keeps serving")
    assert models.get("").classifier.name == "default"
    assert switched == [["x", "2"]]  # told once, after version 2 served; not for the refusal


def test_a_version_that_would_break_the_memory_bound_is_refused_and_the_old_keeps_serving(
    tmp_path, caplog
):
    for version in ("1", "2"):
        (tmp_path / f"catdog-{version}").mkdir()
    link = _link(tmp_path, "catdog-1")
    mib = 2**20
    held = Served(Named("catdog", "1", 300 * mib), str)
    models = ServedModels(Served(Named("default", "x"), str), {"catdog": held})

    def load(name, path):
        return Named(name, "2", 400 * mib)  # 640 MiB held beside the old one's 480

    rollout = Rollout(models, _links(link), load, (Refused,), bound_mb=1000)
    _link(tmp_path, "catdog-2")
    rollout.check()
    assert models.get("catdog") is held
    (refusal,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "needs about 1120 MiB, more than the 1000 MiB of WORKER_MODELS_MEMORY_MB" in refusal


def test_the_memory_bound_counts_each_package_by_its_artefact():
    mib = 2**20
    models = [Named("a", "1", 100 * mib), Named("b", "1", 200 * mib), Named("torch", "")]
    assert over_bound(models, 480) == ""
    assert over_bound(models, 479) == (
        "holding 3 models needs about 480 MiB, more than the 479 MiB of WORKER_MODELS_MEMORY_MB"
    )
