"""The price table, its overrides, the cost model under EC2's billing, and the request counter."""

from __future__ import annotations

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from loadgen.status import run_cost
from loadgen.summary import format_table, summarize
from runtime.costs import Run, billed_s, compute_usd, cpu_per_1000_usd, summary, with_requests
from runtime.prices import DEFAULT_PRICES, PriceError, parse_prices
from runtime.requests import RequestCounter, by_class, price_class
from runtime.settings import ConfigError, Settings
from runtime.usage import Usage, format_usage, parse_usage
from scaler.billing import Ledger
from scaler.plan import Instance


@pytest.mark.parametrize(
    ("run_s", "billed"), [(0, 60), (1, 60), (59.5, 60), (60, 60), (61.5, 61.5), (3600, 3600)]
)
def test_each_run_is_billed_per_second_with_a_minute_minimum(run_s, billed):
    assert billed_s(run_s) == billed


def test_compute_prices_each_run_by_type_and_market():
    hourly = DEFAULT_PRICES.hourly("c6i.large")
    spot = DEFAULT_PRICES.hourly("c6i.large", "spot")
    runs = [Run("c6i.large", "on-demand", 20), Run("c6i.large", "spot", 7200)]
    assert compute_usd(runs, DEFAULT_PRICES) == pytest.approx(hourly / 60 + 2 * spot)
    assert spot < hourly
    # A type missing from the table is priced as the default worker type, never as free.
    assert DEFAULT_PRICES.hourly("x9.huge") == hourly


def test_summary_splits_compute_requests_and_fixed_hosts():
    requests = {"s3-put": 2000, "s3-get": 1000, "sqs": 3000}
    cost = summary(
        compute=0.01, requests=requests, images=1000, fixed_s=3600, prices=DEFAULT_PRICES
    )
    request_usd = 2000 * 0.005 / 1000 + 1000 * 0.0004 / 1000 + 3000 * 0.4e-6
    assert cost["requests"] == pytest.approx(request_usd)
    assert cost["per_1000_images"] == pytest.approx(0.01 + request_usd)
    assert cost["fixed"] == pytest.approx(0.0208)  # the t3.small web host, scaler included
    assert cost["currency"] == "USD" and cost["compute"] == 0.01
    assert (
        summary(compute=0, requests={}, images=0, fixed_s=0, prices=DEFAULT_PRICES)[
            "per_1000_images"
        ]
        is None
    )


def test_prices_json_overrides_what_it_names_and_keeps_the_rest():
    prices = Settings.from_env(
        {"PRICES_JSON": '{"instances": {"c6i.large": {"spot": 0.02}}, "requests": {"sqs": 0}}'}
    ).prices
    assert prices.hourly("c6i.large", "spot") == 0.02
    assert prices.hourly("c6i.large") == DEFAULT_PRICES.hourly("c6i.large")
    assert prices.request("sqs") == 0 and prices.request("s3-put") == 0.005 / 1000
    # One fixed host: the web host runs the scaler too (issue 25).
    assert parse_prices('{"web_host": "t3.micro"}').fixed_hourly == pytest.approx(0.0104)
    assert DEFAULT_PRICES.fixed_hourly == pytest.approx(0.0208)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "not JSON"),
        ("[]", "must be a JSON object"),
        ('{"instance": {}}', "unknown key 'instance'"),
        ('{"requests": {"s3-put": -1}}', r"requests.s3-put must be >= 0"),
        ('{"requests": {"s3-put": "cheap"}}', r"requests.s3-put must be a number"),
        ('{"requests": {"lambda": 1}}', "unknown class 'lambda'"),
        ('{"instances": {"c6i.large": {"reserved": 1}}}', "market must be on-demand|spot"),
        ('{"instances": {"z1.new": {"spot": 1}}}', "needs an on-demand price"),
        ('{"web_host": "z1.new"}', "no price for 'z1.new'"),
    ],
)
def test_a_bad_price_setting_is_one_line(raw, message):
    with pytest.raises(PriceError, match=message):
        parse_prices(raw)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"PRICES_JSON": raw})
    assert "\n" not in str(raised.value) and str(raised.value).startswith("PRICES_JSON")


@pytest.mark.parametrize(
    ("service", "operation", "expected"),
    [
        ("s3", "PutObject", "s3-put"),
        ("s3", "ListObjectsV2", "s3-put"),
        ("s3", "GetObject", "s3-get"),
        ("s3", "HeadObject", "s3-get"),
        ("s3", "DeleteObject", "s3-free"),
        ("sqs", "ReceiveMessage", "sqs"),
        ("cloudwatch", "GetMetricStatistics", "cloudwatch-get"),
        ("cloudwatch", "PutMetricData", "cloudwatch-put"),
        ("cloudwatch", "ListMetrics", "cloudwatch-list"),
        ("ec2", "DescribeInstances", "free"),
    ],
)
def test_each_call_has_its_price_class(service, operation, expected):
    assert price_class(service, operation) == expected


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def test_the_counter_counts_every_attempt_a_client_sends():
    counter = RequestCounter()
    client = counter.attach(
        boto3.session.Session().client(
            "sqs",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            endpoint_url="http://127.0.0.1:9",
        )
    )
    statuses = iter([500, 200, 200])  # the first call is retried once: two requests sent

    def answer(request, **_):
        # Registered after the counter's hook, so it answers in AWS's place once counted.
        status = next(statuses)
        body = b'{"QueueUrl": "http://q"}' if status == 200 else b'{"__type": "InternalError"}'
        return AWSResponse(
            request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body)
        )

    client.meta.events.register("before-send.sqs", answer)
    client.get_queue_url(QueueName="q")
    client.get_queue_url(QueueName="q")
    assert counter.counts() == {("sqs", "GetQueueUrl"): 3}
    assert by_class(counter.counts().items()) == {"sqs": 3}


def test_usage_survives_its_tag_and_rejects_what_is_not_one():
    usage = Usage("1700000000.5", 12, {"s3-put": 24, "sqs": 40, "s3-get": 0})
    assert format_usage(usage) == "run=1700000000.5 images=12 s3-put=24 sqs=40"
    assert parse_usage(format_usage(usage)) == Usage("1700000000.5", 12, {"s3-put": 24, "sqs": 40})
    # The busy seconds (what the scaler's throughput divides by) come right after the images.
    busy = Usage("1700000000.5", 12, {"sqs": 40}, busy_s=1.23456)
    assert format_usage(busy) == "run=1700000000.5 images=12 busy_s=1.235 sqs=40"
    assert parse_usage(format_usage(busy)) == Usage("1700000000.5", 12, {"sqs": 40}, 1.235)
    assert format_usage(Usage("r", 300, {f"class-{k}": 10**6 for k in range(40)}, 9.5)).startswith(
        "run=r images=300 busy_s=9.500 "
    )  # cut at EC2's 256 characters, the busy time kept
    for bad in ("", "images=3", "run=1 images=x", "run=1 images=-1", "run=1 images=2 sqs=a"):
        assert parse_usage(bad) is None
    for bad in ("busy_s=-1", "busy_s=nan", "busy_s=inf", "busy_s=soon"):
        assert parse_usage(f"run=1 images=2 {bad}") is None


def _instance(state: str, at: float, usage: Usage | None = None, iid: str = "i-1") -> Instance:
    tag = format_usage(usage) if usage else ""
    return Instance(iid, state, launched_at=at, instance_type="c6i.large", usage=tag)


def test_the_ledger_bills_each_run_with_its_minute_and_keeps_what_ended():
    ledger = Ledger(DEFAULT_PRICES)
    per_s = DEFAULT_PRICES.hourly("c6i.large") / 3600
    ledger.observe([_instance("pending", 100.0)], 100.0)
    ledger.observe([_instance("running", 100.0)], 110.0)
    assert ledger.compute_usd() == pytest.approx(60 * per_s)  # 10 s run so far: a paid minute
    ledger.observe([_instance("stopped", 100.0)], 200.0)  # ended at the last tick that saw it
    ledger.observe([_instance("running", 300.0)], 400.0)  # a start from stopped: a new run
    assert ledger.compute_usd() == pytest.approx(60 * per_s + 100 * per_s)
    ledger.observe([], 500.0)  # terminated: the run ended at 400, nothing lost
    assert ledger.compute_usd() == pytest.approx(160 * per_s)


def test_the_ledger_prices_a_spot_run_at_spot():
    ledger = Ledger(DEFAULT_PRICES)
    spot = Instance("i-s", "running", launched_at=0.0, instance_type="c7i.large", spot=True)
    ledger.observe([spot], 3600.0)
    assert ledger.compute_usd() == pytest.approx(DEFAULT_PRICES.hourly("c7i.large", "spot"))


def test_the_ledger_adds_the_latest_usage_of_every_worker_run():
    ledger = Ledger(DEFAULT_PRICES)
    ledger.observe([_instance("running", 1.0, Usage("a", 5, {"s3-put": 10}))], 2.0)
    ledger.observe([_instance("running", 1.0, Usage("a", 8, {"s3-put": 16}))], 3.0)  # cumulative
    ledger.observe([_instance("running", 9.0, Usage("b", 2, {"sqs": 4}))], 10.0)  # restarted
    assert ledger.images() == 10 and ledger.worker_requests() == {"s3-put": 16, "sqs": 4}
    ledger.observe([_instance("running", 9.0, Usage("c", 1), iid="i-2")], 11.0)  # i-1 is gone
    assert ledger.images() == 11 and ledger.worker_requests() == {"s3-put": 16, "sqs": 4}


def test_the_web_adds_its_own_requests_to_the_scalers_cost():
    scaler = summary(
        compute=0.002, requests={"s3-put": 1000}, images=500, fixed_s=60, prices=DEFAULT_PRICES
    )
    cost = with_requests(scaler, {"s3-put": 1000, "sqs": 10}, DEFAULT_PRICES)
    assert cost["request_counts"] == {"s3-put": 2000, "sqs": 10}
    assert cost["requests"] == pytest.approx(2000 * 0.005 / 1000 + 10 * 0.4e-6)
    assert cost["per_1000_images"] == pytest.approx((0.002 + cost["requests"]) * 2)
    assert cost["fixed"] == scaler["fixed"]
    alone = with_requests(None, {"sqs": 1}, DEFAULT_PRICES)  # the scaler did not answer
    assert alone["compute"] == 0 and alone["per_1000_images"] is None


# ---- loadgen: a run's cost from /status before and after -------------------------------------


def test_loadgen_prices_the_run_from_two_status_documents():
    before = {"cost": {**_COST, "compute": 0.001, "requests": 0.002, "fixed": 0.01, "images": 50}}
    after = {"cost": {**_COST, "compute": 0.003, "requests": 0.004, "fixed": 0.02, "images": 150}}
    cost = run_cost(before, after)
    assert cost["per_1000_images"] == pytest.approx((0.002 + 0.002) * 10)
    assert cost["images"] == 100 and cost["fixed"] == pytest.approx(0.01)
    assert run_cost(before, {"fleet": {}}) is None and run_cost(None, after) is None
    table = format_table(summarize([], 1.0, scored=False, cost=cost))
    assert (
        "cost        $0.04 per 1,000 images (compute $0.002, requests $0.002 for 100 images"
        in table
    )


_COST = {"currency": "USD", "fixed_per_hour": 0.0312, "per_1000_images": None}


def test_cpu_per_image_is_priced_per_vcpu_second_of_the_default_type():
    # c6i.large: $0.085/h over 2 vCPUs; 10 CPU ms an image is 10 CPU s per 1,000 images.
    assert cpu_per_1000_usd(10.0, DEFAULT_PRICES) == pytest.approx(10 * 0.085 / 3600 / 2)
    assert cpu_per_1000_usd(10.0, DEFAULT_PRICES, "spot") < cpu_per_1000_usd(10.0, DEFAULT_PRICES)
