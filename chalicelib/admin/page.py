"""The console page and its script, served by the provider itself at `/admin`: static files of
`static/` (no build step; the two libraries it signs with are vendored verbatim from npm, see
`static/vendor/README.md`), read once per container. The page may load only its own files and
call only its own origin (Content-Security-Policy), and may not be framed."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from chalice import Response

STATIC = Path(__file__).with_name("static")
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "vendor/secp256k1.js": "text/javascript; charset=utf-8",
    "vendor/sha3.js": "text/javascript; charset=utf-8",
    "vendor/_u64.js": "text/javascript; charset=utf-8",
    "vendor/utils.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=None)
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def asset(name: str) -> Response:
    """One of FILES (a fixed list: nothing else of the package is ever served)."""
    if name not in FILES:
        return Response(body='{"error": "Not found"}', status_code=404, headers={"Content-Type": "application/json"})
    return Response(body=_read(name), status_code=200, headers={"Content-Type": FILES[name], **SECURITY_HEADERS})
