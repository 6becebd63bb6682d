"""The node's web pages: the overview page and its static assets, all served locally."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi.responses import FileResponse, HTMLResponse

from citybrain.core.errors import NotFound
from citybrain.core.routing import APIRouter

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(str(resources.files("citybrain.web").joinpath("static")))


def vendor_available() -> bool:
    """Return whether the front-end libraries were built into the package (make assets)."""
    return (STATIC_DIR / "vendor" / "echarts.min.js").is_file()


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    """Serve the node overview page."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html)


@router.get("/m/grid", response_class=HTMLResponse)
def grid_page() -> HTMLResponse:
    """Serve the grid workers' phone page (sign in, report, follow one's own reports)."""
    return HTMLResponse((STATIC_DIR / "grid.html").read_text(encoding="utf-8"))


_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@router.get("/static/{path:path}")
def static_file(path: str) -> FileResponse:
    """Serve a file of the packaged front-end, refusing any path that leaves the folder."""
    root = STATIC_DIR.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound(f"no static file {path!r}")
    return FileResponse(target, media_type=_MEDIA_TYPES.get(target.suffix))


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """Serve the icon so browsers do not log a missing resource."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


def dashboard_url(*, base_url: str, data_dir: Path, code: str, ttl: int = 12 * 3600) -> str:
    """Return the dashboard's address with an operator token of the node in its fragment."""
    from citybrain.governance.identity.tokens import issue_token

    token = issue_token(
        data_dir=data_dir, issuer=code, subject="dashboard", org="bureau", role="operator", ttl=ttl
    )
    # a fragment never reaches the server or its logs; the page moves it to session storage
    return f"{base_url.rstrip('/')}/#token={token}"
