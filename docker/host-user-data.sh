# Body of every host's EC2 user-data (the workers, the web host): install Docker, pull one image
# and run the host's containers from it. deployment/userdata.py prepends the shebang and the
# settings (IMAGE, HANDOVER_MOUNT, IMAGE_UID, CONTAINER_COUNT and, for each container N,
# CONTAINER_N, NETWORK_N, HANDOVER_N, PUBLISH_PORT_N, COMMAND_N, STOP_TIMEOUT_S_N,
# CONTAINER_ENV_N), and the CloudFormation template carries exactly that rendering; nothing here
# is secret: the instance profile is the only credential, fetched from instance metadata.
#
# On the web host the scaler runs on the host network (the only place a metadata token reaches
# under the launch template's hop limit of 1) and writes the web role's session to a directory
# the web container, on a bridge network, mounts read-only (runtime/web_credentials.py).
#
# User-data runs on an instance's first boot only. A stopped-then-started instance (the
# scaler's warm pool) still runs its containers because docker is enabled at boot and they
# have --restart unless-stopped.
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

install -d -m 0700 "$config_dir"
# The web role's session, from the container that holds the instance role to the one that must
# not: owned by the image's user, readable by no one else on the host.
handover_dir=$config_dir/web-credentials

setting() { # the value of setting $1 of container $2
  local name="$1_$2"
  printf '%s' "${!name}"
}

start_container() {
  local number=$1 name network handover port env_file
  name=$(setting CONTAINER "$number")
  network=$(setting NETWORK "$number")
  handover=$(setting HANDOVER "$number")
  port=$(setting PUBLISH_PORT "$number")
  env_file="$config_dir/$name.env"
  setting CONTAINER_ENV "$number" >"$env_file"
  printf '\n' >>"$env_file"
  if [ -n "$extra_env" ]; then
    printf '%s\n' "$extra_env" >>"$env_file"
  fi
  chmod 0600 "$env_file"

  local options=()
  if [ "$network" = host ]; then
    options+=(--network host)
  else
    # Bridge containers reach the host's own services (the scaler's status) by this name.
    options+=(--add-host host.docker.internal:host-gateway)
  fi
  if [ -n "$port" ]; then
    options+=(--publish "$port:$port")
  fi
  case $handover in
    writes)
      install -d -m 0700 -o "$IMAGE_UID" -g "$IMAGE_UID" "$handover_dir"
      options+=(--volume "$handover_dir:$HANDOVER_MOUNT")
      ;;
    reads)
      local attempt
      for ((attempt = 1; attempt <= 60; attempt++)); do
        [ -e "$handover_dir/config" ] && break
        echo "waiting for the web role's session (attempt $attempt)"
        sleep "${CLASSIFIER_RETRY_DELAY_S:-2}"
      done
      if [ ! -e "$handover_dir/config" ]; then
        echo "no web-role session was handed over; see docker logs classifier-scaler" >&2
        return 1
      fi
      options+=(
        --volume "$handover_dir:$HANDOVER_MOUNT:ro"
        --env "AWS_CONFIG_FILE=$HANDOVER_MOUNT/config"
        --env AWS_EC2_METADATA_DISABLED=true
      )
      ;;
  esac
  local command
  read -ra command <<<"$(setting COMMAND "$number")"
  docker rm --force "$name" >/dev/null 2>&1 || true
  # INSTANCE_METADATA_URL: the worker watches it for Spot interruption notices (worker/notice.py).
  docker run --detach --name "$name" \
    --restart unless-stopped \
    --stop-timeout "$(setting STOP_TIMEOUT_S "$number")" \
    --env-file "$env_file" \
    --env "INSTANCE_ID=$instance_id" \
    --env "INSTANCE_METADATA_URL=$imds" \
    --log-opt max-size=10m --log-opt max-file=3 \
    "${options[@]}" \
    "$IMAGE" "${command[@]}"
  echo "$name container started for $instance_id"
}

for ((number = 1; number <= CONTAINER_COUNT; number++)); do
  start_container "$number"
done
