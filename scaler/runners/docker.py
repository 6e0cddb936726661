"""The Docker runner: one worker container per running fleet instance (`RUNNER=docker`).

It is how `docker compose up` emulates EC2 workers next to LocalStack. Everything it knows lives
in the containers' labels, so a restarted scaler finds its workers again instead of doubling them,
and a container without our labels is never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from docker.errors import APIError, NotFound

from runtime.settings import Settings, tier_fields
from scaler.runners.base import InstanceView

log = logging.getLogger(__name__)

LABEL_FLEET = "elastic-classifier.fleet"
LABEL_INSTANCE = "elastic-classifier.instance-id"
# A container being drained is renamed: the name is the one mark a running container can still
# take, and it stops a restarted scaler from sending a second (cold) SIGTERM.
DRAINING_SUFFIX = "-draining"
# "created" is not alive: a container whose start failed is replaced, not waited for.
_ALIVE = ("running", "restarting", "paused")
# Credentials and endpoints boto3 reads; a worker container needs them to reach the same AWS.
_AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
)


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the scaler's environment a worker container inherits.

    AWS endpoint and credentials, and the settings every tier or the worker reads; never the
    scaler's own settings (RUNNER=docker in a worker would mean nothing, and must not leak).
    """
    names = {*_AWS_VARIABLES, *(f.name.upper() for f in tier_fields("worker"))}
    return {name: environ[name] for name in sorted(names) if environ.get(name)}


def docker_runner(settings: Settings, environ: Mapping[str, str]) -> DockerRunner:
    """The runner `python -m scaler` makes for RUNNER=docker; its main() passes os.environ.

    DOCKER_NETWORK names the network the workers join (compose sets it so that they resolve
    LocalStack); the engine is found the SDK's way (DOCKER_HOST or the local socket).
    """
    import docker

    return DockerRunner(
        docker.from_env(),
        settings.worker_image,
        worker_environment(environ),
        fleet=settings.fleet_name,
        network=environ.get("DOCKER_NETWORK") or None,
        # A warm stop finishes the batch in hand, which must end within its visibility timeout.
        stop_timeout_s=settings.visibility_timeout_s + 10,
        boot_delay_new_s=settings.boot_delay_new_s,
        boot_delay_start_s=settings.boot_delay_start_s,
    )


class DockerRunner:
    """Reconciles worker containers with the fleet's instance states through the Docker SDK."""

    def __init__(
        self,
        client,
        image: str,
        env: Mapping[str, str],
        *,
        fleet: str,
        network: str | None = None,
        stop_timeout_s: int = 60,
        boot_delay_new_s: float = 0.0,
        boot_delay_start_s: float = 0.0,
        name_prefix: str = "classifier-worker-",
        clock: Callable[[], float] = time.time,
    ):
        self._client = client
        self._image = image
        self._env = dict(env)
        self._fleet = fleet
        self._network = network
        self._stop_timeout_s = stop_timeout_s
        self._boot_delay_new_s = boot_delay_new_s
        self._boot_delay_start_s = boot_delay_start_s
        self._name_prefix = name_prefix
        self._clock = clock
        # docker stop blocks for the whole drain; the scaler's tick must not.
        self._stoppers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker-stop")
        self._stopping: dict[str, Future] = {}
        self._closed = False

    def reconcile(self, instances: list[InstanceView]) -> None:
        running = {i.instance_id: i for i in instances if i.state == "running"}
        self._forget_finished_stops()
        served: set[str] = set()
        for container in self._containers():
            instance_id = container.labels.get(LABEL_INSTANCE, "")
            if container.id in self._stopping or container.name.endswith(DRAINING_SUFFIX):
                if container.status not in _ALIVE and container.id not in self._stopping:
                    self._remove(container)  # drained while an earlier scaler ran
            elif container.status not in _ALIVE:
                self._remove(container)  # an exited worker is replaced, never restarted
            elif instance_id in running:
                served.add(instance_id)
            else:
                self._drain(container)
        now = self._clock()
        for instance in running.values():
            if instance.instance_id not in served and self._booted(instance, now):
                self._start(instance.instance_id)

    def close(self) -> None:
        """Drain every worker of this fleet, wait for the drains, and remove the containers."""
        if self._closed:
            return
        self._closed = True
        for container in self._containers():
            if container.id not in self._stopping:
                self._drain(container)
        self._stoppers.shutdown(wait=True)
        self._forget_finished_stops()  # logs the stops that failed

    def _containers(self) -> list:
        return self._client.containers.list(
            all=True, filters={"label": [f"{LABEL_FLEET}={self._fleet}", LABEL_INSTANCE]}
        )

    def _booted(self, instance: InstanceView, now: float) -> bool:
        delay = self._boot_delay_start_s if instance.restarted else self._boot_delay_new_s
        return now >= instance.launched_at + delay

    def _start(self, instance_id: str) -> None:
        name = f"{self._name_prefix}{instance_id}"
        try:
            self._client.containers.run(
                self._image,
                detach=True,
                name=name,
                labels={LABEL_FLEET: self._fleet, LABEL_INSTANCE: instance_id},
                environment={**self._env, "INSTANCE_ID": instance_id},
                network=self._network,
                # As on EC2 (user-data's --restart unless-stopped): a crashed worker comes back.
                restart_policy={"Name": "unless-stopped"},
            )
        except APIError as error:
            if error.status_code != 409:  # 409: the name is taken, someone already started it
                raise
            log.info("worker %s already exists", name)
            return
        log.info("started worker container %s", name)

    def _drain(self, container) -> None:
        if not container.name.endswith(DRAINING_SUFFIX):
            try:
                container.rename(f"{container.name}{DRAINING_SUFFIX}")
            except NotFound:
                return
        log.info("draining worker container %s", container.name)
        self._stopping[container.id] = self._stoppers.submit(self._stop_and_remove, container)

    def _stop_and_remove(self, container) -> None:
        try:
            container.stop(timeout=self._stop_timeout_s)  # SIGTERM, SIGKILL after the timeout
            container.remove(force=True)
        except NotFound:
            pass

    def _remove(self, container) -> None:
        try:
            container.remove(force=True)
        except NotFound:
            pass

    def _forget_finished_stops(self) -> None:
        for container_id, future in list(self._stopping.items()):
            if future.done():
                del self._stopping[container_id]
                if future.exception() is not None:
                    log.warning("stopping %s failed: %s", container_id[:12], future.exception())
