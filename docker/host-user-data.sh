# Body of every host's EC2 user-data (the workers, the web host, the scaler host): install Docker,
# pull one image and run it as one container. deployment/userdata.py prepends the shebang and the
# settings (IMAGE, CONTAINER, PUBLISH_PORT, COMMAND, STOP_TIMEOUT_S, CONTAINER_ENV), and the
# CloudFormation template carries exactly that rendering; nothing here is secret: the instance
# profile is the only credential, fetched by the SDK from instance metadata.
#
# User-data runs on an instance's first boot only. A stopped-then-started instance (the
# scaler's warm pool) still runs its worker because docker is enabled at boot and the
# container has --restart unless-stopped.
set -euo pipefail
# Overridable only so that tests can run this script in a scratch directory.
config_dir=${CLASSIFIER_CONFIG_DIR:-/etc/elastic-classifier}
# Overridable only for the tests' stand-in instance (tests/test_user_data_boot.py), which has no
# link-local metadata service and whose worker reaches a local AWS: both unset on EC2.
imds=${CLASSIFIER_IMDS_URL:-http://169.254.169.254}
extra_env=${CLASSIFIER_EXTRA_CONTAINER_ENV:-}
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
  aws ecr get-login-password --region "$1" | docker login --username AWS --password-stdin "$2"
}

retry install_docker
systemctl enable --now docker

# IMDSv2: the launch template requires session tokens.
token=$(curl -fsS -X PUT "$imds/latest/api/token" \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
instance_id=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" \
  "$imds/latest/meta-data/instance-id")

registry=${IMAGE%%/*}
ecr_registry='^[0-9]{12}[.]dkr[.]ecr[.]([a-z0-9-]+)[.]amazonaws[.]com([.]cn)?$'
if [[ $registry =~ $ecr_registry ]]; then
  # A 12-hour login token from the instance profile; the image is local after the pull,
  # so restarts do not need it again.
  retry ecr_login "${BASH_REMATCH[1]}" "$registry"
fi
retry docker pull "$IMAGE"

env_file="$config_dir/$CONTAINER.env"
install -d -m 0700 "$config_dir"
printf '%s\n' "$CONTAINER_ENV" >"$env_file"
if [ -n "$extra_env" ]; then
  printf '%s\n' "$extra_env" >>"$env_file"
fi
chmod 0600 "$env_file"

publish=()
if [ -n "$PUBLISH_PORT" ]; then
  publish=(--publish "$PUBLISH_PORT:$PUBLISH_PORT")
fi
read -ra command <<<"$COMMAND"
docker rm --force "$CONTAINER" >/dev/null 2>&1 || true
# INSTANCE_METADATA_URL: the worker watches it for Spot interruption notices (worker/notice.py).
docker run --detach --name "$CONTAINER" \
  --restart unless-stopped \
  --stop-timeout "$STOP_TIMEOUT_S" \
  --env-file "$env_file" \
  --env "INSTANCE_ID=$instance_id" \
  --env "INSTANCE_METADATA_URL=$imds" \
  --log-opt max-size=10m --log-opt max-file=3 \
  "${publish[@]}" \
  "$IMAGE" "${command[@]}"
echo "$CONTAINER container started for $instance_id"
