"""The operator console: one static page (gateway/console/) served at /console.

The page and its assets are public because they hold no data: everything the page shows comes
from the JSON API, called by the browser with the operator's own bearer token. Only the files
that ship in gateway/console/ are served; any other name (including any path trick) is a 404.
"""

import logging
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from gateway.api.roles import guarded

logger = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# The page may talk only to the gateway that served it and load nothing from anywhere else;
# no inline script or style, so injected markup could not run even if escaping failed.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def console_assets(directory: Path = CONSOLE_DIR) -> dict[str, Path]:
    """The servable files: plain files directly in `directory` with a known media type, by name.
    Built once, so a request can only ever name one of these (an allowlist, not a path join)."""
    if not directory.is_dir():
        logger.error("operator console folder %s is missing; /console will answer 404", directory)
        return {}
    return {
        p.name: p
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.is_symlink() and p.suffix in _MEDIA_TYPES and not p.name.startswith(".")
    }


_ASSETS = console_assets()

router = APIRouter(include_in_schema=False)


def _serve(name: str) -> FileResponse:
    path = _ASSETS.get(name)
    if path is None:
        raise HTTPException(404, f"no console file named {name!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_SECURITY_HEADERS)


# Registered through `guarded` like every route, so the role table (public here) covers them too.
@guarded(router, "GET", "/console", include_in_schema=False)
def console_page() -> FileResponse:
    return _serve("index.html")


@guarded(router, "GET", "/console/{asset}", include_in_schema=False)
def console_asset(asset: str) -> FileResponse:
    return _serve(asset)
