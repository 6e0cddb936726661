"""Notice of an interruption: the worker's reading of the metadata service (against the tests'
IMDSv2 stand-in, in this process) and the scaler's plan for an instance under notice."""

from __future__ import annotations

import pytest

from runtime.readiness import under_notice
from runtime.resources import NOTICE_AT_TAG
from runtime.settings import ConfigError, Settings
from scaler.plan import Actions, Instance, PoolRules, capacity, plan, plan_original
from tests.conftest import free_port
from tests.stand_in.imds import MetadataService
from worker.notice import MetadataNotices, NoticeWatch

RULES = PoolRules(warm_pool_max=2, stopped_max_age_s=3600.0)


@pytest.fixture
def imds():
    service = MetadataService("127.0.0.1", free_port(), "i-0123").start()
    yield service
    service.stop()


def _url(imds: MetadataService) -> str:
    host, port = imds._server.server_address[:2]
    return f"http://{host}:{port}"


def test_no_notice_reads_none_with_one_token(imds):
    notices = MetadataNotices(_url(imds))
    assert notices.check() is None
    assert notices.check() is None
    assert [r for r in imds.requests if r[0] == "PUT"] == [("PUT", "/latest/api/token")]


@pytest.mark.parametrize(
    ("path", "what"),
    [
        (MetadataService.SPOT, "spot interruption"),
        (MetadataService.REBALANCE, "rebalance recommendation"),
    ],
)
def test_a_notice_is_read_with_what_it_is(imds, path, what):
    notices = MetadataNotices(_url(imds))
    assert notices.check() is None  # the token is handed out before the notice
    imds.give_notice(path)
    found = notices.check()
    assert found is not None and found.startswith(f"{what}: {{")


def test_an_expired_token_is_renewed(imds):
    notices = MetadataNotices(_url(imds))
    assert notices.check() is None
    imds.tokens.clear()  # the service forgot it (expired, restarted): 401
    assert notices.check() is None
    assert [r for r in imds.requests if r[0] == "PUT"] == [("PUT", "/latest/api/token")] * 2


def test_an_unreachable_service_raises_for_the_periodic_caller_to_log():
    notices = MetadataNotices(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    with pytest.raises(OSError):
        notices.check()


def test_the_watch_acts_once_on_the_first_notice(imds):
    seen: list[str] = []
    watch = NoticeWatch(MetadataNotices(_url(imds)), seen.append)
    assert watch.poll() is False
    imds.give_notice()
    assert watch.poll() is True and watch.poll() is True
    assert len(seen) == 1 and seen[0].startswith("spot interruption")


def test_metadata_settings_are_checked():
    assert Settings().instance_metadata_url == ""  # not watched unless the host says where
    with pytest.raises(ConfigError, match="INSTANCE_METADATA_URL"):
        Settings.from_env({"INSTANCE_METADATA_URL": "file:///etc/passwd"})
    with pytest.raises(ConfigError, match="NOTICE_POLL_S"):
        Settings.from_env({"NOTICE_POLL_S": "0"})


def test_a_notice_tag_counts_for_this_run_only():
    assert under_notice({NOTICE_AT_TAG: "105.0"}, started_at=100.0)
    assert not under_notice({NOTICE_AT_TAG: "95.0"}, started_at=100.0)
    assert not under_notice({NOTICE_AT_TAG: "soon"}, started_at=100.0)
    assert not under_notice({}, started_at=100.0)


def _running(iid: str, notice: bool = False) -> Instance:
    return Instance(iid, "running", 1.0, spot=True, notice=notice)


def test_an_instance_under_notice_is_gone_terminated_and_replaced_at_once():
    fleet = [_running("a"), _running("b", notice=True)]
    assert capacity(fleet) == 1
    assert plan(2, fleet, 10.0, RULES) == Actions(launch=1, terminate=("b",))
    # Scaling in as well: the noticed one goes first, and the count is kept by the others.
    assert plan(1, fleet, 10.0, RULES) == Actions(terminate=("b",))
    assert plan(0, fleet, 10.0, RULES) == Actions(terminate=("b", "a"))
    assert plan_original(2, fleet) == Actions(launch=1, terminate=("b",))
