"""The web role's session, handed from the scaler to the web tier's SDK (issue 25 item 2).

End to end: a real `python -m scaler` assumes the role on moto over HTTP and writes the session;
a separate process with nothing but AWS_CONFIG_FILE (the web container's view) signs as that role
through botocore's own `credential_process`, and its long-lived session moves to a renewed one
before the one it holds expires. Sessions last 905 s here (STS allows 900 and up): botocore
refreshes 900 s before expiry, so its refresh comes after about 5 s instead of 45 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest

from runtime import web_credentials
from runtime.settings import SDK_REFRESH_WINDOW_S, ConfigError, Settings
from tests.conftest import ROOT, free_port
from tests.support.waiting import wait_until
from tests.support.web_sdk import WEB_SDK


# What the web container runs, in short: one long-lived SDK session, as a web process keeps.
def _web_env(config, endpoint: str, home) -> dict[str, str]:
    """The web container's view: no keys in its environment, only the config file."""
    return {
        "PATH": os.environ["PATH"],
        "AWS_CONFIG_FILE": str(config),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(home),
    }


@pytest.fixture
def web_role(aws_client) -> str:
    name = f"web-{uuid.uuid4().hex[:8]}"
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": "arn:aws:iam::123456789012:role/scaler"}}]}  # fmt: skip
    role = aws_client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    return role["Role"]["Arn"]


def test_the_scaler_hands_over_a_session_the_web_sdk_signs_with_and_renews(
    moto_endpoint, web_role, tmp_path
):
    handover = tmp_path / "handover"
    handover.mkdir(mode=0o700)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REQUEST_QUEUE": f"absent-{uuid.uuid4().hex[:8]}",  # ticks fail and go on: not tested here
        "SCALER_STATUS_PORT": str(free_port()),
        "SCALER_TICK_S": "30",
        "WEB_ROLE_ARN": web_role,
        "WEB_CREDENTIALS_DIR": str(handover),
        "WEB_CREDENTIALS_DURATION_S": "905",
        "WEB_CREDENTIALS_REFRESH_S": "1",
    }
    scaler = subprocess.Popen(
        [sys.executable, "-m", "scaler"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "scaler.log", "w"),  # noqa: SIM115 - closed with the process
    )
    try:
        config = handover / web_credentials.CONFIG_NAME
        wait_until(config.exists, "the scaler's first handover", 60)
        session = json.loads((handover / web_credentials.CREDENTIALS_NAME).read_text())
        assert session["Version"] == 1 and session["AccessKeyId"] and session["SessionToken"]
        left_s = datetime.fromisoformat(session["Expiration"]) - datetime.now(timezone.utc)
        assert 0 < left_s.total_seconds() <= 905
        for path in handover.iterdir():  # only the scaler's user (the web image's) reads them
            assert path.stat().st_mode & 0o077 == 0, path
        assert str(handover / web_credentials.CREDENTIALS_NAME) in config.read_text()

        # The web container's view: no keys in its environment, only the config file.
        web_env = _web_env(config, moto_endpoint, tmp_path)
        done = subprocess.run(
            [sys.executable, "-c", WEB_SDK],
            env=web_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        first, renewed = (json.loads(line) for line in done.stdout.splitlines())
        role_name = web_role.rsplit("/", 1)[1]
        for seen in (first, renewed):
            assert seen["arn"].endswith(f":assumed-role/{role_name}/classifier-web"), seen
        assert renewed["key"] != first["key"]
    finally:
        scaler.terminate()
        scaler.wait(timeout=60)
    assert scaler.returncode == 0, (tmp_path / "scaler.log").read_text()[-2000:]


def test_without_a_handover_the_web_sdk_finds_no_credentials(moto_endpoint, tmp_path):
    """The web container's SDK, with metadata off and no session handed over: it fails at once
    with botocore's one-line error, and never falls back to anything else."""
    config = tmp_path / "config"
    config.write_text(web_credentials.config_text(str(tmp_path / "missing")))
    done = subprocess.run(
        [sys.executable, "-c", "import boto3; boto3.client('sts').get_caller_identity()"],
        env=_web_env(config, moto_endpoint, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CredentialRetrievalError" in done.stderr or "credential" in done.stderr.lower()


@pytest.mark.unit
def test_sts_credentials_become_credential_process_output():
    expires = datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)
    output = web_credentials.process_output(
        {"AccessKeyId": "ASIAX", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": expires}
    )
    assert output == {
        "Version": 1,
        "AccessKeyId": "ASIAX",
        "SecretAccessKey": "s",
        "SessionToken": "t",
        "Expiration": "2026-12-04T21:00:00+00:00",
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEB_ROLE_ARN": "arn:aws:iam::1:role/w"}, "WEB_ROLE_ARN needs WEB_CREDENTIALS_DIR"),
        ({"WEB_CREDENTIALS_DURATION_S": "4000"}, "WEB_CREDENTIALS_DURATION_S must be 900-3600"),
        ({"WEB_CREDENTIALS_DURATION_S": "899"}, "WEB_CREDENTIALS_DURATION_S must be 900-3600"),
        # A session renewed every 45 min of 60 may be handed to the SDK with under 15 min left:
        # botocore would refresh it on every call and fail once under 10.
        ({"WEB_CREDENTIALS_REFRESH_S": "2700"}, "WEB_CREDENTIALS_REFRESH_S must be"),
        ({"WEB_CREDENTIALS_REFRESH_S": "0"}, "WEB_CREDENTIALS_REFRESH_S must be"),
    ],
)
def test_a_handover_that_could_hand_the_sdk_an_expiring_session_is_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.unit
def test_the_defaults_leave_the_sdk_more_than_its_refresh_window():
    settings = Settings()
    oldest_left_s = settings.web_credentials_duration_s - settings.web_credentials_refresh_s
    assert oldest_left_s > SDK_REFRESH_WINDOW_S
