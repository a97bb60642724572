"""The live dashboard a daemon serves on its status port: a static page, its script and its
style (package data, no build step, nothing fetched from outside the machine), which poll
/status once a second; and `History`, the bounded record of the chain that /status adds for it."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

# URL path -> (file in this package, content type)
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


@cache
def page(name: str) -> bytes:
    """One of the dashboard's files, read once."""
    return files(__name__).joinpath(name).read_bytes()
