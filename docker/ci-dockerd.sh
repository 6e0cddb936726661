#!/usr/bin/env bash
# Bring up a Docker engine for the tests on a fresh CI machine (root, Debian, no registry).
#
# Installs docker.io (the engine) and busybox-static (the stand-in worker's root filesystem)
# when missing, starts dockerd in the background and waits until it answers. Never fails the
# run: tests that need Docker skip with the reason when the engine does not come up.
set -u
LOG_DIR=${DOCKERD_LOG_DIR:-/tmp/ci-dockerd}
mkdir -p "$LOG_DIR"

if [ "$(id -u)" != 0 ]; then
  echo "ci-dockerd: not root; Docker tests will skip unless an engine is already running"
  exit 0
fi
if ! command -v dockerd >/dev/null || ! command -v busybox >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq docker.io busybox-static; } \
    >"$LOG_DIR/apt.log" 2>&1 || echo "ci-dockerd: apt-get failed, see $LOG_DIR/apt.log"
fi
if docker info >/dev/null 2>&1; then
  echo "ci-dockerd: engine already running"
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "ci-dockerd: no dockerd; Docker tests will skip"
  exit 0
fi
nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 &
echo $! >"$LOG_DIR/dockerd.pid"
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "ci-dockerd: engine up (pid $(cat "$LOG_DIR/dockerd.pid"), log $LOG_DIR/dockerd.log)"
    exit 0
  fi
  sleep 1
done
echo "ci-dockerd: dockerd did not answer in 60 s; last log lines:"
tail -n 20 "$LOG_DIR/dockerd.log"
exit 0
