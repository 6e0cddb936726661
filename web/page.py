"""The browser page at GET /: upload images, watch the queue, the fleet and the scaler live.

POST / stays the upload endpoint (the course's workload generators post there), so the page's
resource hands POSTs to the upload resource unchanged. The page is static HTML, CSS and JS from
web/static/, with no external assets: it works offline and under a strict content policy.
"""

from __future__ import annotations

from pathlib import Path

import falcon

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Scripts and styles only from this origin; images only from this origin or the user's own files.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class PageResource:
    def __init__(self, upload, index: Path = STATIC_DIR / "index.html"):
        self._upload = upload
        self._html = index.read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self._html
        resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.set_header("X-Content-Type-Options", "nosniff")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._upload.on_post(req, resp)  # its validation runs as on /upload; POST / needs the key
