#!/bin/bash
# PID 1 of the stand-in instance: what EC2's boot does around our user-data.
#
# Every boot, "systemd" starts docker if it was enabled, and dockerd restarts the containers
# whose restart policy says so. On the first boot only, "cloud-init" runs the user-data
# (/var/lib/cloud/user-data, put there before the first start). SIGTERM (docker stop: the
# instance stopping) stops docker, which stops its containers as a shutdown does.
set -u
state=/var/lib/cloud/instance
mkdir -p "$state"
rm -f /run/dockerd.pid

shutdown() {
  echo "boot: shutting down"
  systemctl stop docker
  exit 0
}
trap shutdown TERM INT

echo "boot: $(date -u +%FT%TZ)" >>/var/log/boots.log
if [ -e /etc/systemd-stand-in/enabled/docker ]; then
  systemctl start docker
fi
if [ ! -e "$state/boot-finished" ]; then
  echo "cloud-init: running user-data"
  bash /var/lib/cloud/user-data >>/var/log/cloud-init-output.log 2>&1
  echo "cloud-init: user-data exited $?" | tee -a /var/log/cloud-init-output.log
  touch "$state/boot-finished"
fi
while :; do
  sleep 1 &
  wait $!
done
