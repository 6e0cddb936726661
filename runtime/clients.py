"""boto3 clients for one process.

Which AWS answers is left to boto3's own conventions (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SVC>,
profiles, instance roles), so nothing outside the embedded launcher knows it may be talking to
moto or LocalStack.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

from runtime.settings import Settings


def client_config(pool_size: int = 50, read_timeout_s: float = 30.0) -> Config:
    # Long polls hold a connection up to 20 s; their clients keep the 30 s read timeout.
    return Config(
        max_pool_connections=pool_size,
        read_timeout=read_timeout_s,
        connect_timeout=3,
        retries={"mode": "standard", "max_attempts": 3},
    )


def make_client(
    service: str, settings: Settings, pool_size: int = 50, read_timeout_s: float = 30.0
):
    return boto3.session.Session().client(
        service,
        region_name=settings.aws_region,
        config=client_config(pool_size, read_timeout_s),
    )
