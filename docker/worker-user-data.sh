# Body of the workers' EC2 user-data. deployment/userdata.py prepends the shebang and the settings
# (WORKER_IMAGE, ECR_REGISTRY, ECR_REGION, STOP_TIMEOUT_S, WORKER_ENV); nothing here is secret:
# the instance profile is the only credential, fetched by the SDK from instance metadata.
#
# User-data runs on an instance's first boot only. A stopped-then-started instance (the
# scaler's warm pool) still runs its worker because docker is enabled at boot and the
# container has --restart unless-stopped.
set -euo pipefail
# Overridable only so that tests can run this script in a scratch directory.
config_dir=${CLASSIFIER_CONFIG_DIR:-/etc/elastic-classifier}
# Overridable only for the tests' stand-in instance (tests/test_user_data.py), which has no
# link-local metadata service and whose worker reaches a local AWS: both unset on EC2.
imds=${CLASSIFIER_IMDS_URL:-http://169.254.169.254}
extra_worker_env=${CLASSIFIER_EXTRA_WORKER_ENV:-}
exec > >(tee -a "${CLASSIFIER_SETUP_LOG:-/var/log/elastic-classifier-setup.log}") 2>&1

retry() {
  local attempt
  for attempt in 1 2 3 4 5; do
    "$@" && return 0
    echo "attempt $attempt of: $* failed" >&2
    sleep $((attempt * ${CLASSIFIER_RETRY_DELAY_S:-5}))
  done
  return 1
}

install_docker() {
  if command -v docker >/dev/null 2>&1; then
    return 0
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y docker
  elif command -v yum >/dev/null 2>&1; then
    yum install -y docker
  elif command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -y && apt-get install -y docker.io
  else
    echo "no package manager to install docker with" >&2
    return 1
  fi
}

ecr_login() {
  aws ecr get-login-password --region "$ECR_REGION" \
    | docker login --username AWS --password-stdin "$ECR_REGISTRY"
}

retry install_docker
systemctl enable --now docker

# IMDSv2: the launch template requires session tokens.
token=$(curl -fsS -X PUT "$imds/latest/api/token" \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
instance_id=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" \
  "$imds/latest/meta-data/instance-id")

if [ -n "$ECR_REGISTRY" ]; then
  # A 12-hour login token from the instance profile; the image is local after the pull,
  # so restarts do not need it again.
  retry ecr_login
fi
retry docker pull "$WORKER_IMAGE"

install -d -m 0700 "$config_dir"
printf '%s\n' "$WORKER_ENV" >"$config_dir/worker.env"
if [ -n "$extra_worker_env" ]; then
  printf '%s\n' "$extra_worker_env" >>"$config_dir/worker.env"
fi
chmod 0600 "$config_dir/worker.env"

docker rm --force classifier-worker >/dev/null 2>&1 || true
docker run --detach --name classifier-worker \
  --restart unless-stopped \
  --stop-timeout "$STOP_TIMEOUT_S" \
  --env-file "$config_dir/worker.env" \
  --env "INSTANCE_ID=$instance_id" \
  --log-opt max-size=10m --log-opt max-file=3 \
  "$WORKER_IMAGE"
echo "worker container started for $instance_id"
