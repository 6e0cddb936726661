"""A small stand-in for EC2's instance metadata service (IMDSv2) for the stand-in instance.

It answers what the user-data and the SDKs ask: a session token (PUT), the instance id, and the
instance profile's temporary credentials. Every GET needs the token, as IMDSv2 with required
tokens (the launch template's setting) does; a GET without one gets 401.

The hop limit is the real thing, not a check of who asks: the token's response leaves with an IP
TTL of the launch template's HttpPutResponseHopLimit, as EC2's does. This service is one hop
from the stand-in instance (the test host, on the instance's network); a container on a bridge
inside the instance is one more, so under a limit of 1 the instance's kernel drops the answer
when it would forward it (TTL exhausted) and the container never gets a token, while a
host-network process there does. Only the PUT's answer is limited, as on EC2.

`give_notice()` serves a Spot interruption notice (or a rebalance recommendation) to the holders
of the tokens handed out so far: on a shared stand-in (several local workers watching one
service) those are the instances alive at the notice; a replacement, with a newer token, has none.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = "classifier-worker"


class MetadataService:
    def __init__(
        self,
        host: str,
        port: int,
        instance_id: str,
        hop_limit: int | None = None,  # None: the system's TTL (a local worker's shared stand-in)
        role: str = ROLE,
    ):
        self.instance_id, self.role = instance_id, role
        self.tokens: set[str] = set()
        self.notices: dict[str, str] = {}  # token -> the notice path it is served
        self.requests: list[tuple[str, str]] = []  # (method, path): what the instance asked
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802
                service.requests.append(("PUT", self.path))
                if self.path != "/latest/api/token":
                    return self._send(HTTPStatus.NOT_FOUND, "")
                token = secrets.token_urlsafe(24)
                service.tokens.add(token)
                if hop_limit is not None:
                    self.connection.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hop_limit)
                self._send(HTTPStatus.OK, token)

            def do_GET(self) -> None:  # noqa: N802
                service.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") not in service.tokens:
                    return self._send(HTTPStatus.UNAUTHORIZED, "")
                token = self.headers.get("X-aws-ec2-metadata-token")
                body = service.notices.get(token) == self.path and service.notice_body(self.path)
                body = body or service.answer(self.path)
                if body is None:
                    return self._send(HTTPStatus.NOT_FOUND, "")
                self._send(HTTPStatus.OK, body)

            def _send(self, status: HTTPStatus, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, path: str) -> str | None:
        base = "/latest/meta-data/"
        credentials = f"{base}iam/security-credentials/"
        if path == f"{base}instance-id":
            return self.instance_id
        if path == credentials:
            return self.role
        if path == credentials + self.role:
            expires = datetime.now(timezone.utc) + timedelta(hours=6)
            # moto accepts any key; these are the instance profile's, handed out at run time.
            return json.dumps(
                {
                    "Code": "Success",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": "ASIASTANDINSTANCE",
                    "SecretAccessKey": secrets.token_urlsafe(30),
                    "Token": secrets.token_urlsafe(30),
                    "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "LastUpdated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
        if path == f"{base}placement/region":
            return "us-east-1"
        return None

    SPOT = "/latest/meta-data/spot/instance-action"
    REBALANCE = "/latest/meta-data/events/recommendations/rebalance"

    def give_notice(self, path: str = SPOT) -> int:
        """Serve `path`'s notice to every token handed out so far; how many tokens that is."""
        for token in list(self.tokens):
            self.notices[token] = path
        return len(self.tokens)

    def notice_body(self, path: str) -> str:
        at = (datetime.now(timezone.utc) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if path == self.SPOT:
            return json.dumps({"action": "terminate", "time": at})
        return json.dumps({"noticeTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})

    def start(self) -> MetadataService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
