"""The hosts' user-data: one script, quoted settings, and the template carrying exactly that."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from deployment import template, userdata
from deployment.userdata import SCRIPT, render, worker_env
from runtime.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e  # starts processes (or reads built images)

ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/elastic-classifier-worker:1"


def settings_for(name: str, **overrides) -> Settings:
    values = {
        "input_bucket": f"{name}-in",
        "output_bucket": f"{name}-out",
        "request_queue": f"{name}-requests",
        "fleet_name": f"{name}-fleet",
        "worker_image": ECR_IMAGE,
    }
    return Settings(**{**values, **overrides})


def test_every_host_template_runs_the_one_script_after_its_settings():
    resources = yaml.safe_load(template.PATH.read_text())["Resources"]
    launch_templates = [r for r in resources.values() if r["Type"] == "AWS::EC2::LaunchTemplate"]
    assert len(launch_templates) == 2  # workers, the web host (web and scaler)
    for resource in launch_templates:
        joined = resource["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Join"]
        settings_block, script = joined[1]
        assert script == SCRIPT.read_text()
        assert settings_block["Fn::Sub"].startswith("#!/bin/bash\n")


def test_user_data_quotes_settings_and_carries_no_credentials():
    settings = settings_for("q", model="it's $(reboot)")
    script = render(settings, stop_timeout_s=40)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    header = script.split("\nset -euo pipefail", 1)[0]
    printed = subprocess.run(
        ["bash", "-c", header + '\nprintf "%s|%s" "$IMAGE" "$CONTAINER_ENV_1"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    image, env_file = printed.split("|", 1)
    assert image == settings.worker_image
    assert dict(line.split("=", 1) for line in env_file.splitlines()) == worker_env(settings)
    assert "MODEL=it's $(reboot)" in env_file.splitlines()
    assert not any(k.startswith("AWS_") and k != "AWS_REGION" for k in worker_env(settings))


def test_a_setting_of_two_lines_is_refused():
    with pytest.raises(ValueError, match="MODEL must be one line"):
        render(settings_for("n", model="a\nb"), stop_timeout_s=40)


def test_user_data_and_ci_script_pass_shellcheck(tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; .ci/run does)")
    script = tmp_path / "user-data.sh"
    script.write_text(render(settings_for("sc"), stop_timeout_s=40))
    done = subprocess.run(
        ["shellcheck", str(script), str(ROOT / "docker/ci-dockerd.sh")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout


def _stub(directory, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >>"$CALLS"\n{body}\n')
    path.chmod(0o755)


def _run_stubbed(tmp_path, user_data: str, docker_installed: bool = True) -> list[str]:
    """The real script, run by bash with the system's commands replaced by recording stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tee", "install", "chmod", "sleep", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    _stub(bin_dir, "systemctl", "")
    _stub(bin_dir, "curl", 'case "$*" in *api/token*) echo tok;; *instance-id*) echo i-0abc;; esac')
    _stub(bin_dir, "aws", "echo ecr-password")
    _stub(bin_dir, "dnf", f'{shutil.which("ln")} -s "{bin_dir}/docker-stub" "{bin_dir}/docker"')
    # The scaler's first handover, as `docker run` of the scaler container makes it.
    handover = tmp_path / "etc" / "web-credentials" / "config"
    _stub(
        bin_dir,
        "docker-stub",
        # `login` reads the password as docker does: a stub that did not could end before
        # `aws` wrote it, and pipefail took the SIGPIPE for a failed login.
        f'case "$*" in login*) cat >/dev/null;; *"name classifier-scaler"*) echo >"{handover}";;'
        " esac",
    )
    if docker_installed:
        (bin_dir / "docker").symlink_to(bin_dir / "docker-stub")
    script = tmp_path / "user-data.sh"
    script.write_text(user_data)
    calls = tmp_path / "calls"
    env = {
        "PATH": str(bin_dir),
        "CALLS": str(calls),
        "CLASSIFIER_CONFIG_DIR": str(tmp_path / "etc"),
        "CLASSIFIER_SETUP_LOG": str(tmp_path / "setup.log"),
        "CLASSIFIER_RETRY_DELAY_S": "0",
    }
    subprocess.run(["/bin/bash", str(script)], env=env, check=True, timeout=30)
    return calls.read_text().splitlines()


@pytest.mark.parametrize("docker_installed", [True, False])
def test_user_data_installs_enables_and_runs_the_worker(tmp_path, docker_installed):
    settings = settings_for("ud")
    lines = _run_stubbed(tmp_path, render(settings, stop_timeout_s=40), docker_installed)

    assert ("dnf install -y docker" in lines) is not docker_installed
    assert "systemctl enable --now docker" in lines
    assert "aws ecr get-login-password --region us-east-1" in lines
    registry = settings.worker_image.split("/")[0]
    assert f"docker-stub login --username AWS --password-stdin {registry}" in lines
    assert f"docker-stub pull {settings.worker_image}" in lines
    run = next(line for line in lines if line.startswith("docker-stub run"))
    env_file = tmp_path / "etc" / "classifier-worker.env"
    assert "--name classifier-worker" in run
    assert "--restart unless-stopped" in run
    assert "--stop-timeout 40" in run
    assert f"--env-file {env_file}" in run
    assert "--env INSTANCE_ID=i-0abc" in run
    assert "--publish" not in run
    assert run.endswith(settings.worker_image)
    written = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert written == worker_env(settings)
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_an_image_outside_ecr_is_pulled_without_a_login(tmp_path):
    settings = settings_for("reg", worker_image="registry.example:5000/worker:1")
    lines = _run_stubbed(tmp_path, render(settings, stop_timeout_s=40))
    assert not [line for line in lines if line.startswith(("aws ", "docker-stub login"))]
    assert "docker-stub pull registry.example:5000/worker:1" in lines


def test_the_web_host_runs_the_scaler_on_the_host_then_the_web_on_a_bridge(tmp_path):
    """Issue 25: the scaler (host network: it alone reaches instance metadata) writes the web
    role's session to a directory the web container (a bridge) mounts read-only."""
    settings = settings_for(
        "wh",
        scaler_status_host="0.0.0.0",
        web_role_arn="arn:aws:iam::1:role/w",
        web_credentials_dir=userdata.HANDOVER_MOUNT,
    )
    parts = userdata.header(settings, ECR_IMAGE, userdata.web_host_containers(settings, 30))
    lines = _run_stubbed(tmp_path, "".join(parts) + userdata.script())
    scaler, web = [line for line in lines if line.startswith("docker-stub run")]
    handover = tmp_path / "etc" / "web-credentials"
    mount = userdata.HANDOVER_MOUNT
    assert "--name classifier-scaler" in scaler and scaler.endswith(f"{ECR_IMAGE} python -m scaler")
    assert "--network host" in scaler and "--publish" not in scaler
    assert f"--volume {handover}:{mount} " in scaler
    assert "--name classifier-web" in web and web.endswith(ECR_IMAGE)
    assert "--network" not in web  # Docker's default bridge
    assert f"--publish {settings.port}:{settings.port}" in web
    assert f"--volume {handover}:{mount}:ro" in web
    assert f"--env AWS_CONFIG_FILE={mount}/config" in web
    assert "--env AWS_EC2_METADATA_DISABLED=true" in web
    assert "--add-host host.docker.internal:host-gateway" in web
    assert oct(handover.stat().st_mode & 0o777) == "0o700"
    assert handover.stat().st_uid == userdata.IMAGE_UID
    written = (tmp_path / "etc" / "classifier-scaler.env").read_text().splitlines()
    assert "SCALER_STATUS_HOST=0.0.0.0" in written
    assert (
        f"WEB_CREDENTIALS_DIR={mount}" in written
        and "WEB_ROLE_ARN=arn:aws:iam::1:role/w" in written
    )
    assert not [line for line in written if line.startswith(("PORT=", "HOST="))]
    web_env = (tmp_path / "etc" / "classifier-web.env").read_text()
    assert "WEB_ROLE_ARN" not in web_env and "PORT=3000" in web_env


def test_the_handover_directory_belongs_to_the_web_images_user():
    dockerfile = (ROOT / "Dockerfile.web").read_text()
    assert f"USER {userdata.IMAGE_UID}:{userdata.IMAGE_UID}" in dockerfile
