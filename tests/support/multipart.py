"""A multipart/form-data body built by hand, for tests that post through falcon's TestClient
(which, unlike requests, builds no forms)."""

from __future__ import annotations

BOUNDARY = "b0undary"


def form(
    files: dict[str, tuple[str, bytes]],
    fields: dict[str, str] | None = None,
    content_type: str | None = "image/jpeg",
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a form with each file as (filename, data) under its field name, and
    each text field after them; content_type is every file part's, None for none."""
    parts = []
    for name, (filename, data) in files.items():
        disposition = f'form-data; name="{name}"; filename="{filename}"'
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        parts.append((head + "\r\n").encode() + data + b"\r\n")
    for name, value in (fields or {}).items():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
