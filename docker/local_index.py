"""Serve this machine's local wheel folders as one package index over HTTP, for `docker build`.

Some machines (CI here) keep wheels on disk in PEP 503 folders that the host's pip reads as
`file://` URLs (`pip config list`). A build container cannot read the host's disk, and the torch
step of Dockerfile.worker takes exactly one index (`--index-url`, never `--extra-index-url`), so
this merges every folder into one index on 127.0.0.1 that `docker build --network host` reaches:

    python3 docker/local_index.py --port 8499 file:///opt/pypi/simple file:///opt/pypi-more/simple

GET /simple/<project>/ lists that project's files from every folder (a project none of them
holds is redirected to PyPI, as the host's pip falls back to it); GET /files/<n>/<path> serves
a file of folder n. Nothing else is served. Standard library only: it runs on the host.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

_HREF = re.compile(r'<a\s+href="([^"]+)"[^>]*>([^<]*)</a>', re.IGNORECASE)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def simple_roots(urls: list[str]) -> list[Path]:
    """The existing local folders among `file://` index URLs (others are ignored)."""
    roots = []
    for url in urls:
        parsed = urlparse(url)
        path = Path(unquote(parsed.path))
        if parsed.scheme == "file" and path.is_dir():
            roots.append(path.resolve())
    return roots


def project_page(roots: list[Path], project: str) -> str | None:
    """One merged PEP 503 page for a project, links rewritten to this server's /files/."""
    links = []
    for n, root in enumerate(roots):
        page = root / _canonical(project) / "index.html"
        if not page.is_file():
            continue
        for href, text in _HREF.findall(page.read_text(errors="replace")):
            target, _, fragment = html.unescape(href).partition("#")
            resolved = (page.parent / target).resolve()
            if root.parent not in resolved.parents or not resolved.is_file():
                continue  # only files of this folder's own tree are served
            url = f"/files/{n}/{resolved.relative_to(root.parent).as_posix()}"
            url += f"#{fragment}" if fragment else ""
            links.append(f'<a href="{html.escape(url)}">{html.escape(text)}</a><br>')
    if not links:
        return None
    return "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"


class _Handler(BaseHTTPRequestHandler):
    roots: list[Path] = []
    fallback = "https://pypi.org/simple"

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        parts = [p for p in unquote(urlparse(self.path).path).split("/") if p]
        if len(parts) == 2 and parts[0] == "simple":
            page = project_page(self.roots, parts[1])
            if page is not None:
                return self._send(page.encode(), "text/html")
            # Not on this disk: the ordinary index, as the host's own pip would fall back to.
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", f"{self.fallback}/{_canonical(parts[1])}/")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        elif len(parts) >= 3 and parts[0] == "files" and parts[1].isdigit():
            n = int(parts[1])
            if n < len(self.roots) and ".." not in parts:
                path = self.roots[n].parent.joinpath(*parts[2:])
                if path.is_file():
                    return self._send_file(path)
        self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, path: Path) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the hook's name
        pass  # pip's own output says what was fetched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fallback", default=_Handler.fallback, help="index for other projects")
    parser.add_argument("urls", nargs="+", help="file:// index URLs (PEP 503 folders)")
    args = parser.parse_args(argv)
    roots = simple_roots(args.urls)
    if not roots:
        print("local_index: none of the given file:// indexes exists", file=sys.stderr)
        return 2
    _Handler.roots = roots
    _Handler.fallback = args.fallback.rstrip("/")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"local_index: serving {len(roots)} folder(s) on http://127.0.0.1:{args.port}/simple")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
