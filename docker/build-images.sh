#!/usr/bin/env bash
# Build the images on a machine that can reach Debian's mirror and PyPI but no container
# registry (`make images`; the container tests and docs/deploy.md use it too).
#
#   docker/build-images.sh [web] [worker] [moto] [localstack]     # none named: all of them
#
#   1. A local stand-in for python:3.11-slim-bookworm: `debootstrap --variant=minbase` from the
#      host's apt mirror, python3 + venv first on PATH, and the host's extra CA certificates
#      (downloads here go through a TLS proxy) with pip told to use the system bundle.
#      `docker import` makes it an image; it is built once and then reused.
#   2. Dockerfile.web and Dockerfile.worker, unchanged, with build arguments only
#      (BASE_IMAGE, and TORCH_INDEX_URL for the worker). Repeated runs reuse Docker's cache.
#   3. LocalStack from PyPI (docker/Dockerfile.localstack, exact pins in
#      docker/localstack-requirements.txt) on a Debian trixie base made the same way (LocalStack 4
#      needs Python 3.12+), tagged as compose.yaml names LocalStack's image, at that tag's version.
#
# Where the host's pip reads local wheel folders (`file://` extra indexes in `pip config list`),
# docker/local_index.py serves them as one index on 127.0.0.1 and the worker's torch step reads
# it (`--network host`): torch's wheels are then copied from disk instead of downloaded.
# Otherwise the torch step reads PyPI (CUDA wheels; PyTorch's CPU index is not reachable here).
#
# Settings (environment): BASE_IMAGE (skip step 1 and use this image, e.g. the official one),
# WEB_IMAGE, WORKER_IMAGE, MOTO_IMAGE (tags), TORCH_INDEX_URL (skip the local index), LOCAL_INDEX_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

WEB_IMAGE=${WEB_IMAGE:-elastic-classifier-web:latest}
WORKER_IMAGE=${WORKER_IMAGE:-elastic-classifier-worker:latest}
MOTO_IMAGE=${MOTO_IMAGE:-elastic-classifier-moto:latest}
LOCAL_BASE=elastic-classifier-base:bookworm
# LocalStack 4 needs Python 3.12+: Debian trixie (3.13).
TRIXIE_BASE=elastic-classifier-base:trixie
# Fixed, so that the torch step's build argument (and so its cache) is the same every run.
LOCAL_INDEX_PORT=${LOCAL_INDEX_PORT:-8499}
NICE=(nice -n 10)

say() { printf 'build-images: %s\n' "$*"; }
now() { date +%s; }

apt_mirror() {
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

build_local_base() {
  # A Debian suite with python3 and a venv as an image: tag, suite, extra packages.
  local tag=$1 suite=$2 include=python3,python3-venv,ca-certificates${3:+,$3}
  if docker image inspect "$tag" >/dev/null 2>&1; then
    say "base $tag already built"
    return 0
  fi
  command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; return 1; }
  local rootfs start log=/tmp/classifier-base-$suite-debootstrap.log
  start=$(now)
  rootfs=$(mktemp -d "/tmp/classifier-base-$suite.XXXXXX")
  trap 'rm -rf "$rootfs"' RETURN
  # The mirror serves every suite, whichever one the host's apt sources name.
  say "debootstrap $suite from $(apt_mirror)"
  "${NICE[@]}" debootstrap --variant=minbase --include="$include" \
    "$suite" "$rootfs" "$(apt_mirror)" >"$log" 2>&1 \
    || { tail -n 20 "$log"; return 1; }
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  chroot "$rootfs" update-ca-certificates >/dev/null
  chroot "$rootfs" python3 -m venv /opt/python
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$tag" >/dev/null
  say "base $tag built in $(($(now) - start)) s"
}

compose_localstack_image() {
  # The default of compose.yaml's `image: ${LOCALSTACK_IMAGE:-localstack/localstack:<version>}`.
  # shellcheck disable=SC2016  # the ${...} is compose.yaml's text, not the shell's
  sed -n 's/^ *image: \${LOCALSTACK_IMAGE:-\(localstack\/localstack:[^}]*\)}$/\1/p' compose.yaml
}

local_wheel_indexes() {
  # The host's own pip settings: file:// indexes that exist on this disk.
  local url
  for url in $(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.extra-index-url='\(.*\)'$/\1/p"); do
    case "$url" in file://*) [ -d "${url#file://}" ] && printf '%s\n' "$url" ;; esac
  done
  return 0
}

start_local_index() {
  mapfile -t urls < <(local_wheel_indexes)
  if [ "${#urls[@]}" = 0 ]; then
    return 1
  fi
  python3 docker/local_index.py --port "$LOCAL_INDEX_PORT" "${urls[@]}" >/tmp/classifier-local-index.log 2>&1 &
  index_pid=$!
  trap 'kill "$index_pid" 2>/dev/null || true' EXIT
  local _
  for _ in $(seq 1 50); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$LOCAL_INDEX_PORT/simple/torch/" 2>/dev/null; then
      say "local wheel index (${urls[*]}) on 127.0.0.1:$LOCAL_INDEX_PORT"
      return 0
    fi
    kill -0 "$index_pid" 2>/dev/null || break
    sleep 0.2
  done
  cat /tmp/classifier-local-index.log
  say "the local wheel index did not start (is port $LOCAL_INDEX_PORT taken? set LOCAL_INDEX_PORT)"
  exit 1
}

build() {
  local dockerfile=$1 tag=$2 start log
  shift 2
  log=/tmp/classifier-build-$(basename "${tag%%:*}").log
  start=$(now)
  "${NICE[@]}" docker build --force-rm --network host --file "$dockerfile" --tag "$tag" "$@" . \
    >"$log" 2>&1 \
    || { tail -n 40 "$log"; say "$dockerfile failed"; exit 1; }
  say "$tag from $dockerfile in $(($(now) - start)) s," \
    "$(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

wanted() { [ "${#only[@]}" = 0 ] || [[ " ${only[*]} " == *" $1 "* ]]; }

only=("$@")
for name in "${only[@]}"; do
  case "$name" in web | worker | moto | localstack) ;; *) say "unknown image $name (web worker moto localstack)"; exit 2 ;; esac
done
docker info >/dev/null 2>&1 || { say "no Docker engine answers (run docker/ci-dockerd.sh as root)"; exit 1; }
if [ -z "${BASE_IMAGE:-}" ] && { wanted web || wanted worker || wanted moto; }; then
  build_local_base "$LOCAL_BASE" bookworm
  BASE_IMAGE=$LOCAL_BASE
fi
if wanted web; then
  build Dockerfile.web "$WEB_IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE"
fi
if wanted worker; then
  if [ -z "${TORCH_INDEX_URL:-}" ]; then
    if start_local_index; then
      TORCH_INDEX_URL=http://127.0.0.1:$LOCAL_INDEX_PORT/simple
    else
      TORCH_INDEX_URL=https://pypi.org/simple
    fi
  fi
  build Dockerfile.worker "$WORKER_IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
fi
# The AWS stand-in of the user-data boot test (compose.moto.yaml).
if wanted moto; then
  build docker/Dockerfile.moto "$MOTO_IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE"
fi
# LocalStack from PyPI, tagged as compose.yaml names it: `docker compose up` runs it unchanged.
if wanted localstack; then
  localstack=$(compose_localstack_image)
  [ -n "$localstack" ] || { say "compose.yaml names no localstack/localstack:<version> image"; exit 1; }
  build_local_base "$TRIXIE_BASE" trixie curl
  build docker/Dockerfile.localstack "$localstack" --build-arg "BASE_IMAGE=$TRIXIE_BASE" \
    --build-arg "LOCALSTACK_VERSION=${localstack#*:}"
fi
