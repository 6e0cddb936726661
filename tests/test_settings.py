"""Settings: parsed once, typed, and a bad value is one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runtime.settings import EXIT_CONFIG, ConfigError, Settings, describe, tier_fields


def test_defaults():
    settings = Settings.from_env({})
    assert settings.port == 3000 and settings.result_timeout_s == 60.0
    assert settings.max_receive_count == 3 and settings.web_threads >= 200
    assert settings.dead_letter_queue == "classifier-requests-dlq"
    assert settings.policy == "drain" and settings.idle_delay_s == 2.0


def test_environment_overrides_and_region_fallback():
    settings = Settings.from_env(
        {"PORT": "8080", "AWS_DEFAULT_REGION": "eu-west-1", "BATCH_MAX": "4"}
    )
    assert (settings.port, settings.aws_region, settings.batch_max) == (8080, "eu-west-1", 4)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "PORT: expected int"),
        ({"PORT": "70000"}, "PORT"),
        ({"BATCH_MAX": "11"}, "BATCH_MAX"),
        ({"INLINE_MAX_BYTES": "153601"}, "INLINE_MAX_BYTES"),
        ({"INLINE_MAX_BYTES": "-1"}, "INLINE_MAX_BYTES"),
        ({"RESULT_TIMEOUT_S": "-1"}, "RESULT_TIMEOUT_S"),
        ({"PREPROCESS": "fancy"}, "PREPROCESS"),
        ({"FLEET_MIN": "5", "FLEET_MAX": "2"}, "FLEET_MIN"),
        ({"POLICY": "fastest"}, "POLICY must be drain|target|seed"),
        ({"IDLE_DELAY_S": "-1"}, "IDLE_DELAY_S"),
        ({"IDLE_DELAY_S": "soon"}, "IDLE_DELAY_S: expected float"),
        ({"EXPECTED_BOOT_NEW_S": "-40"}, "EXPECTED_BOOT_NEW_S"),
        ({"EXPECTED_BOOT_START_S": "-1"}, "EXPECTED_BOOT_START_S"),
        ({"ARRIVAL_WINDOW_S": "0"}, "ARRIVAL_WINDOW_S"),
        ({"QUIET_PERIOD_S": "-1"}, "QUIET_PERIOD_S"),
        ({"LATENCY_TARGET_S": "0"}, "LATENCY_TARGET_S"),
        ({"DEFAULT_THROUGHPUT_IMG_S": "0"}, "DEFAULT_THROUGHPUT_IMG_S"),
        ({"WARM_POOL_MAX": "-1"}, "WARM_POOL_MAX"),
        ({"RUNNER": "k8s"}, "RUNNER must be none|process|docker"),
        ({"MODEL_OPTIMIZE": "onnx"}, "MODEL_OPTIMIZE must be jit|eager"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be text|json"),
        ({"MODELS": "catdog"}, "MODELS: 'catdog' is not NAME=PATH"),
        ({"MODELS": "Cat Dog=/m"}, "MODELS: 'Cat Dog' is not a model name"),
        ({"MODELS": "a=/m,a=/n"}, "MODELS: 'a' is named twice"),
        ({"MODELS": "efficientnet_lite0=/m"}, "named twice"),
        ({"SCALER_WAKE_TOKEN_OWNER": "app"}, "SCALER_WAKE_TOKEN_OWNER must be empty or UID:GID"),
        ({"SCALER_WAKE_TOKEN_OWNER": "10001:"}, "SCALER_WAKE_TOKEN_OWNER"),
    ],
)
def test_bad_values_fail_with_one_line(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_models_are_the_default_then_each_package_named():
    settings = Settings.from_env({"MODELS": " catdog=/m/catdog , defects=/m/d "})
    assert settings.model_names == ("efficientnet_lite0", "catdog", "defects")
    assert settings.model_packages == {"catdog": "/m/catdog", "defects": "/m/d"}


def test_describe_lists_each_tier():
    assert "RESULT_TIMEOUT_S" in describe(("web",)) and "BATCH_MAX" not in describe(("web",))
    assert "BATCH_MAX" in describe(("worker",))


def test_a_setting_read_by_two_tiers_is_declared_for_both():
    def names(tier):
        return {f.name for f in tier_fields(tier)}

    # Workers label their throughput by fleet, the scaler reads it by fleet.
    assert "fleet_name" in names("worker") & names("scaler")
    # The web tier keys its result cache by the worker's model and preprocessing.
    assert {"model", "preprocess"} <= names("web") & names("worker")
    assert "policy" in names("scaler") and "policy" not in names("worker")
    assert "FLEET_NAME" in describe(("worker",)) and "POLICY" not in describe(("worker",))


@pytest.mark.e2e  # starts processes
@pytest.mark.parametrize(
    "command", [["web"], ["worker"], ["scaler"], ["embedded", "provision"]], ids=lambda c: c[0]
)
def test_every_entry_point_rejects_a_bad_setting_in_the_same_one_line(command):
    result = subprocess.run(
        [sys.executable, "-m", *command],
        env={"PORT": "nope", "BATCH_MAX": "99", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_CONFIG == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{command[0]}: bad setting: "), result.stderr


@pytest.mark.e2e  # starts processes
@pytest.mark.parametrize("module", ["web", "worker"])
def test_tier_help_documents_settings(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "AWS_REGION" in result.stdout
