"""boto3 clients for one process.

Which AWS answers is left to boto3's own conventions (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SVC>,
profiles, instance roles), so nothing outside the embedded launcher knows it may be talking to
moto or LocalStack.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

from runtime.requests import RequestCounter
from runtime.settings import Settings


def client_config(pool_size: int = 50, read_timeout_s: float = 30.0) -> Config:
    # Long polls hold a connection up to 20 s; their clients keep the 30 s read timeout.
    # Checksums only where an API requires them: since botocore 1.36 every S3 PUT computes a
    # CRC32 of its body and every GET checks one, which costs the worker about 0.6-1 CPU ms on
    # a 3 MB phone photo (docs/performance.md). TLS already protects the bytes in transit, and
    # S3 still checks Content-Length; the APIs that require a checksum (DeleteObjects, ...) get
    # one anyway.
    return Config(
        max_pool_connections=pool_size,
        read_timeout=read_timeout_s,
        connect_timeout=3,
        retries={"mode": "standard", "max_attempts": 3},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_client(
    service: str,
    settings: Settings,
    pool_size: int = 50,
    read_timeout_s: float = 30.0,
    counter: RequestCounter | None = None,
):
    """counter: counts every request the client sends (the process's cost figures)."""
    client = boto3.session.Session().client(
        service,
        region_name=settings.aws_region,
        config=client_config(pool_size, read_timeout_s),
    )
    return client if counter is None else counter.attach(client)
