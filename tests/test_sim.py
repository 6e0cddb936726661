"""The simulator: the CLI's JSON covers every (trace, policy); the model behaves as described."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from runtime.settings import DEFAULT_POLICY, POLICIES, Settings
from scaler.arrivals import PUBLISH_LAG_S, STEADY_WINDOW_S
from scaler.policies import Limits
from scaler.sim.model import SimConfig, simulate
from scaler.sim.traces import Trace, TraceError, burst, bursts, from_csv, standard_traces
from scaler.sim.unseen import SHAPES

pytestmark = pytest.mark.e2e  # starts processes (or reads built images)

KEYS = {
    "trace",
    "policy",
    "completion_s",
    "p50_s",
    "p95_s",
    "peak_instances",
    "instance_seconds",
    "instance_seconds_min60",
    "starts",
    "market",
    "billing",
    "cost_per_1000",
    "cost_per_1000_per_s",
    "fixed_usd",
    "interruptions",
}


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaler.sim", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def rows_of(*args: str) -> list[dict]:
    return [json.loads(line) for line in run_cli("--json", *args).stdout.splitlines()]


def test_json_has_every_trace_and_policy_with_the_keys():
    rows = rows_of()
    names = [t.name for t in standard_traces()]
    markets, billings = ("on-demand", "spot"), ("min60", "per-second")
    assert {(r["trace"], r["policy"], r["market"], r["billing"]) for r in rows} == {
        (t, p, m, b) for t in names for p in POLICIES for m in markets for b in billings
    }
    assert len(rows) == len(names) * len(POLICIES) * len(markets) * len(billings)
    for row in rows:
        assert set(row) == KEYS | ({"default"} if row["policy"] == DEFAULT_POLICY else set())
        assert row.get("default", False) is (row["policy"] == DEFAULT_POLICY)
        assert row["peak_instances"] >= 1 and row["instance_seconds"] > 0
        # Every start is billed at least 60 s.
        assert row["instance_seconds_min60"] >= max(row["instance_seconds"], 60 * row["starts"])
        assert 0 < row["p50_s"] <= row["p95_s"] <= row["completion_s"]
        # Money: the 60 s minimum costs at least per-second billing; hosts are apart.
        assert row["cost_per_1000"] >= row["cost_per_1000_per_s"] > 0
        if row["billing"] == "per-second":  # the row's cost is its billing's
            assert row["cost_per_1000"] == row["cost_per_1000_per_s"]
        assert row["fixed_usd"] > 0 and row["interruptions"] == 0  # no rate given
    by_key = {(r["trace"], r["policy"], r["market"], r["billing"]): r for r in rows}
    # Spares fill the pool on-demand only (EC2 will not stop a Spot instance): a Spot row is the
    # on-demand run without spares, at the Spot price.
    spareless = {
        (r["trace"], r["policy"], r["billing"]): r
        for r in rows_of("--no-spares", "--market", "on-demand")
    }
    for (trace, policy, market, billing), row in by_key.items():
        if market == "spot":
            on_demand = spareless[(trace, policy, billing)]
            assert row["cost_per_1000"] < on_demand["cost_per_1000"]
            assert row["instance_seconds_min60"] == on_demand["instance_seconds_min60"]
            assert row["starts"] == on_demand["starts"]
    # The trace set the issue asks for.
    assert {"burst-100", "burst-1000"} <= set(names)
    assert sum(n.startswith("poisson-") for n in names) >= 3
    assert any(n.startswith("step-") for n in names)
    for shape in ("ramp-", "bursts-", "grader-", "sparse-"):
        assert any(n.startswith(shape) for n in names), shape


def test_cli_is_deterministic_and_prints_a_table():
    assert run_cli("--json").stdout == run_cli("--json").stdout
    table = run_cli("--only", "burst-100", "--policy", "target", "--policy", "seed").stdout
    assert "burst-100" in table and "target" in table and "seed" in table
    assert "inst_s_min60" in table


def write_trace(tmp_path, text: str, name: str = "mine.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cli_replays_a_csv_trace_on_your_instance_type(tmp_path):
    path = write_trace(tmp_path, "t\n" + "0\n" * 30 + "100.5\n")
    rows = rows_of("--trace", path, "--policy", "seed", "--market", "spot", "--billing", "min60")
    assert [(r["trace"], r["policy"], r["market"], r["billing"]) for r in rows] == [
        ("mine", "seed", "spot", "min60")
    ]
    assert rows[0]["p95_s"] == pytest.approx(41.0)  # a 40 s boot plus one 1 s batch
    fast = rows_of("--trace", path, "--policy", "seed", "--boot-new-s", "20", "--throughput", "20")
    assert fast[0]["p95_s"] == pytest.approx(20.5)  # half the boot, half the batch time
    ticks = rows_of("--trace", path, "--policy", "drain", "--tick-s", "5")
    assert ticks[0]["default"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--trace", "/nonexistent/trace.csv"], "No such file"),
        (["--boot-new-s", "-1"], "must be >= 0"),
        (["--market", "reserved"], "invalid choice"),
        (["--spot-interruptions-per-hour", "-1"], "must be >= 0"),
        (["--throughput", "0"], "must be > 0"),
        (["--tick-s", "soon"], "not a number"),
        (["--tick-s", "nan"], "not a finite number"),
        (["--policy", "fastest"], "invalid choice"),
        (["--fleet-min", "3", "--fleet-max", "2"], "--fleet-min"),
    ],
)
def test_cli_bad_options_give_one_line_and_fail(args, says):
    done = run_cli(*args, check=False)
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and not done.stdout


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "header"),
        ("time\n1\n", "header"),
        ("t\n", "no arrival times"),
        ("t\n1\nsoon\n", ":3: expected one number"),
        ("t\n1,2\n", ":2: expected one number"),
        ("t\n-4\n", ":2: arrival time must be"),
        ("t\ninf\n", ":2: arrival time must be"),
    ],
)
def test_bad_trace_files_are_refused_with_the_line(tmp_path, text, says):
    path = write_trace(tmp_path, text)
    with pytest.raises(TraceError, match=says):
        from_csv(path)
    done = run_cli("--trace", path, check=False)
    assert done.returncode == 2 and says.split(":")[-1].strip() in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_binary_trace_file_is_refused(tmp_path):
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0" * 10)
    with pytest.raises(TraceError):
        from_csv(str(path))


def test_csv_arrivals_are_sorted_and_blank_lines_skipped(tmp_path):
    trace = from_csv(write_trace(tmp_path, "t\n5\n\n1.5\n3\n", "late.csv"))
    assert trace == Trace("late", (1.5, 3.0, 5.0))


def test_seeded_traces_repeat_and_differ_by_seed():
    assert standard_traces(1) == standard_traces(1)
    assert standard_traces(1) != standard_traces(2)
    assert bursts(5, 2, 60).arrivals == (0.0,) * 5 + (60.0,) * 5


def test_unseen_traces_are_written_the_same_for_the_same_seed(tmp_path):
    def write(folder: str, seed: str) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "scaler.sim.unseen", str(tmp_path / folder), "--seed", seed],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "wrote 4 traces" in done.stdout
        return {p.name: p.read_text() for p in sorted((tmp_path / folder).iterdir())}

    first, again, other = write("a", "3"), write("b", "3"), write("c", "4")
    assert sorted(first) == sorted(f"{shape}.csv" for shape in SHAPES)
    assert first == again and first != other
    for name in first:
        trace = from_csv(str(tmp_path / "a" / name))
        assert trace.name == name.removesuffix(".csv") and len(trace.arrivals) > 10
    # The spike is 500 requests at once at 10 minutes, on a 0.2/s trickle.
    spike = from_csv(str(tmp_path / "a" / "trickle_spike.csv")).arrivals
    assert spike.count(600.0) >= 500 and 150 < len(spike) - 500 < 350


def test_unseen_traces_refuse_a_folder_they_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "scaler.sim.unseen", str(blocker / "traces")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("trace", standard_traces(), ids=lambda t: t.name)
def test_every_request_completes(trace, policy):
    result = simulate(trace, policy)
    assert result.completed == result.requests == len(trace.arrivals)
    assert result.peak_instances <= SimConfig().limits.max


def test_a_cold_burst_waits_for_the_boot():
    config = SimConfig(boot_new_s=40.0, service_s=0.1, batch_overhead_s=0.0)
    result = simulate(burst(10), "seed", config)
    # Three instances boot for 40 s; the batches go to the first to come up.
    assert result.p50_s == pytest.approx(41.0)
    assert result.peak_instances == 3


def test_spot_interruptions_lose_nothing_and_are_replaced():
    trace = burst(1000)
    config = SimConfig(market="spot", interruptions_per_hour=120.0)  # 1 in 15 ticks each
    interrupted = simulate(trace, DEFAULT_POLICY, config)
    calm = simulate(trace, DEFAULT_POLICY, SimConfig(market="spot"))
    assert interrupted.interruptions > 0 and calm.interruptions == 0
    assert interrupted.completed == interrupted.requests == 1000
    assert interrupted.starts > calm.starts  # the scaler replaced what was taken
    on_demand = simulate(trace, DEFAULT_POLICY, replace(config, market="on-demand"))
    assert on_demand.interruptions == 0  # only Spot instances are interrupted


def test_cost_per_1000_is_compute_under_the_minimum_plus_requests():
    config = SimConfig(requests_per_image=(("s3-put", 2.0),))
    result = simulate(burst(100), "seed", config)
    compute = config.prices.hourly("c6i.large") * result.instance_seconds_min60 / 3600
    assert result.cost_per_1000 == pytest.approx(compute * 10 + 2 * 0.005)
    assert result.fixed_usd == pytest.approx(
        config.prices.fixed_hourly * result.completion_s / 3600
    )


def test_min60_billing_charges_each_start_a_minute():
    result = simulate(Trace("one", (0.0,)), "seed")
    assert result.starts == 1
    assert result.instance_seconds == pytest.approx(41.0, abs=2.5)  # boot, one batch, a tick
    assert result.instance_seconds_min60 == 60.0


def test_faithful_seed_never_scales_in_under_load_and_keeps_no_pool():
    result = simulate(bursts(100, 3, 120), "seed")
    # Every burst starts cold: stopped instances are terminated, never restarted.
    assert result.p50_s == pytest.approx(41.0)
    assert result.starts == 36 and result.peak_instances == 12


def test_drain_serves_later_bursts_from_the_warm_pool():
    result = simulate(bursts(100, 3, 120), "drain")
    assert result.peak_instances == 10  # one round of batches, not 12
    assert result.p50_s < 20.0  # bursts two and three: restarts, not launches


def test_warm_pool_restarts_are_faster_than_launches():
    config = SimConfig(boot_new_s=40.0, boot_start_s=10.0, quiet_period_s=0.0)
    second = simulate(bursts(4, 2, 200), "target", config)
    # The second burst is served by the instance stopped after the first, restarted in 10 s.
    assert second.p50_s < 40.0


def test_fleet_min_keeps_instances_and_max_caps_them():
    config = SimConfig(limits=Limits(1, 3))
    spareless = replace(config, pool=replace(config.pool, spares=False))
    result = simulate(Trace("quiet", (100.0,)), "target", spareless)
    assert result.peak_instances == 1
    assert result.p95_s < 5.0  # the minimum instance is up when the request comes
    assert simulate(burst(1000), "seed", config).peak_instances == 3
    # The minimum instance serves a minute, then spares fill the pool of two beside it (the
    # running one counts: it would join the pool if stopped), within the cap.
    bigger_pool = replace(config, pool=replace(config.pool, warm_pool_max=3))
    with_spares = simulate(Trace("quiet", (100.0,)), "target", bigger_pool)
    assert with_spares.starts == 3 and with_spares.peak_instances == 3
    capped = replace(bigger_pool, limits=Limits(1, 2))
    assert simulate(Trace("quiet", (100.0,)), "target", capped).peak_instances == 2


# Where the default does not beat the original design, and by how much at most: nowhere on the
# on-demand market since spares fill the warm pool (docs/scaling.md). Without them the step
# trace at 20/5 s boots missed by 15 % at p95: the original's thrashing happened to have
# instances booting when the step came. A bound kept here must say why.
KNOWN_MISSES: dict[tuple[str, str, str], float] = {}


@pytest.mark.parametrize("billing", ["min60", "per-second"])
@pytest.mark.parametrize(("boot_new_s", "boot_start_s"), [(40.0, 10.0), (20.0, 5.0), (60.0, 15.0)])
def test_default_policy_beats_the_original_design(boot_new_s, boot_start_s, billing):
    """The issue's goal: p95 and cost per 1,000 images no worse than the original on every
    standard trace under each billing model (the policy told which), 30 % better on most."""
    config = SimConfig(boot_new_s=boot_new_s, boot_start_s=boot_start_s, billing=billing)
    much_better, traces = 0, standard_traces()
    for trace in traces:
        new, old = simulate(trace, DEFAULT_POLICY, config), simulate(trace, "seed", config)
        for key in ("p95_s", "cost_per_1000"):
            bound = KNOWN_MISSES.get((trace.name, billing, key), 1.0)
            assert getattr(new, key) <= getattr(old, key) * bound + 1e-9, (trace.name, key)
        much_better += any(
            getattr(new, key) <= 0.7 * getattr(old, key) for key in ("p95_s", "cost_per_1000")
        )
    assert much_better > len(traces) / 2


# The unseen traces the goal is checked on: the generator's first three seeds, as files read the
# way `--trace` reads them. Without spares the trickle with a spike of 500 missed on p95 (+5 %
# and +6 %): it found the original design with an instance it launched for the trickle just
# booting, and the drain policy with the trickle's one worker and an empty pool.
UNSEEN_SEEDS = (1, 2, 3)
UNSEEN_KNOWN_MISSES: dict[tuple[int, str, float, str, str], float] = {}


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> dict[int, list[Trace]]:
    traces = {}
    for seed in UNSEEN_SEEDS:
        folder = tmp_path_factory.mktemp(f"unseen-{seed}")
        subprocess.run(
            [sys.executable, "-m", "scaler.sim.unseen", str(folder), "--seed", str(seed)],
            capture_output=True,
            timeout=120,
            check=True,
        )
        traces[seed] = [from_csv(str(folder / f"{shape}.csv")) for shape in SHAPES]
    return traces


@pytest.mark.parametrize("billing", ["min60", "per-second"])
@pytest.mark.parametrize(("boot_new_s", "boot_start_s"), [(40.0, 10.0), (20.0, 5.0), (60.0, 15.0)])
def test_default_policy_beats_the_original_design_on_unseen_traces(
    unseen, boot_new_s, boot_start_s, billing
):
    """The issue's goal on traces the policy was not designed on, fresh draws from a seed."""
    config = SimConfig(boot_new_s=boot_new_s, boot_start_s=boot_start_s, billing=billing)
    much_better, cases = 0, 0
    for seed, traces in unseen.items():
        for trace in traces:
            new, old = simulate(trace, DEFAULT_POLICY, config), simulate(trace, "seed", config)
            for key in ("p95_s", "cost_per_1000"):
                bound = UNSEEN_KNOWN_MISSES.get((seed, trace.name, boot_new_s, billing, key), 1.0)
                case = (seed, trace.name, key)
                assert getattr(new, key) <= getattr(old, key) * bound + 1e-9, case
            cases += 1
            much_better += any(
                getattr(new, key) <= 0.7 * getattr(old, key) for key in ("p95_s", "cost_per_1000")
            )
    assert much_better > cases / 2


def test_an_idle_instance_inside_its_paid_minute_is_kept_not_restarted():
    """Two lone requests 40 s apart, 10 s boots: under EC2's billing the instance that served the
    first is still paid for when the second comes, so one start serves both; billed per second
    it goes after the idle delay and the second request pays a restart (and, a start being paid
    no minimum there, a spare filled the pool as soon as the first worker was ready)."""
    lone_pair, fast = Trace("pair", (0.0, 40.0)), SimConfig(boot_new_s=10.0, boot_start_s=5.0)
    paid = simulate(lone_pair, DEFAULT_POLICY, replace(fast, billing="min60"))
    per_second = simulate(lone_pair, DEFAULT_POLICY, replace(fast, billing="per-second"))
    assert paid.starts == 1 and paid.instance_seconds_min60 == pytest.approx(60.0, abs=2.1)
    assert per_second.starts == 2 + 1
    assert paid.completion_s < per_second.completion_s  # the second answered at once


def test_a_flowing_trickle_keeps_its_worker():
    """One request every 1.5 s for 20 minutes: the worker takes each as it comes, so no tick sees
    one waiting, and the 1 s rate windows often read 0; the counted arrivals restart the idle
    clock and the hold of three gaps keeps the worker. Until the steady rate's two 30 s windows
    have filled (the first minute) the hold is the bare idle delay, which a 1.5 s gap seen a
    second late can outlast: a start or two there, none after."""
    trickle = Trace("trickle", tuple(1.5 * k for k in range(1, 800)))
    config = SimConfig(boot_new_s=10.0, boot_start_s=5.0, billing="per-second")
    result = simulate(trickle, DEFAULT_POLICY, config)
    assert result.starts <= 3 + config.pool.warm_pool_max  # the pool's spares launch once
    assert result.p95_s < 1.0  # all but the first minute's few are answered at once


def test_a_long_tailed_trickle_is_held_no_longer_than_a_restart_costs():
    """Requests 12 s apart with 5 s restarts: holding the idle worker for three gaps (30 s at
    most) would keep it through every gap; a restart costs the 5 s boot, so past that the hold
    costs more than it can save and the worker goes."""
    spaced = Trace("spaced", tuple(12.0 * k for k in range(1, 60)))
    config = SimConfig(boot_new_s=20.0, boot_start_s=5.0, billing="per-second")
    result = simulate(spaced, DEFAULT_POLICY, config)
    assert result.starts > 30
    assert result.instance_seconds < 0.9 * result.completion_s


def test_simulated_scaler_uses_the_deployments_defaults():
    sim, live = SimConfig(), Settings()
    assert (sim.idle_delay_s, sim.arrival_window_s) == (live.idle_delay_s, live.arrival_window_s)
    assert (sim.boot_new_s, sim.boot_start_s) == (
        live.expected_boot_new_s,
        live.expected_boot_start_s,
    )
    assert sim.arrival_lag_s == pytest.approx(PUBLISH_LAG_S, abs=0.25)
    assert (sim.tick_s, sim.pool.warm_pool_max) == (live.scaler_tick_s, live.warm_pool_max)
    assert sim.steady_window_s == STEADY_WINDOW_S
