"""Great Expectations Data Docs that load nothing from the internet.

GX's page templates hard-code about a dozen CDN addresses (Bootstrap, jQuery, Vega, Font
Awesome, ...) and GX has no option to serve them itself, so on a machine without internet
the pages render unstyled and their tables do not work. Written by hand because no library
does this for GX: after GX builds a page, each CDN address it names is pointed at the same
file under the site's own `static/vendor/` (copied from `vendor/data_docs/node_modules`,
which `make setup` installs with npm from `vendor/data_docs/package-lock.json`), and the
links and images that lead off the machine (GX's logo, newsletter and documentation links)
are dropped. Without the vendored files (npm missing) the pages keep their CDN addresses.
"""

import os
import re
import shutil
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "vendor" / "data_docs" / "node_modules"
STATIC = Path("static") / "vendor"  # under the site's root

# GX's CDN addresses (as its templates write them) -> the same file in node_modules.
LOCAL_COPIES: dict[str, str] = {
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "@fortawesome/fontawesome-free/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        "popper.js/dist/umd/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        "bootstrap/dist/js/bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        "bootstrap/dist/css/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "bootstrap-table/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css",
}  # fmt: skip
# Files a copied one loads relative to itself (Font Awesome's fonts).
ALSO_COPIED = ("@fortawesome/fontawesome-free/webfonts",)

_OFF_SITE_IMAGE = re.compile(r"<img\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>", re.IGNORECASE)
_OFF_SITE_LINK = re.compile(r"<a\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*>(.*?)</a>", re.S | re.I)
_INTEGRITY = re.compile(r"\s+(integrity|crossorigin)=\"[^\"]*\"")
_FAVICON = re.compile(r"href=\"(?:\.\./)*static/images/favicon\.ico\"")  # GX's depth can be off
_OFF_SITE_BACKGROUND = re.compile(r"url\('https?://[^']*'\)")  # GX's logo, in the dark theme


def available() -> bool:
    """Whether the vendored files are installed (`make setup` with npm)."""
    return all((VENDOR / path).is_file() for path in LOCAL_COPIES.values())


def _copy_vendor(site: Path) -> None:
    for relative in [*LOCAL_COPIES.values(), *ALSO_COPIED]:
        source, target = VENDOR / relative, site / STATIC / relative
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def localize_page(page: Path, site: Path) -> None:
    """Point `page`'s CDN addresses at the site's copies; drop its off-site links and images."""
    html = page.read_text()
    for address, relative in LOCAL_COPIES.items():
        local = os.path.relpath(site / STATIC / relative, page.parent)
        html = html.replace(f'"{address}"', f'"{local}"')
    html = _INTEGRITY.sub("", html)  # the CDN's hashes, for files now served from here
    icon = os.path.relpath(site / "static" / "images" / "favicon.ico", page.parent)
    html = _FAVICON.sub(f'href="{icon}"', html)
    html = _OFF_SITE_IMAGE.sub("", html)
    html = _OFF_SITE_BACKGROUND.sub("none", html)
    html = _OFF_SITE_LINK.sub(r"\1", html)  # the text stays, the way off the machine goes
    page.write_text(html)


def localize(site: Path, pages: list[Path]) -> bool:
    """Serve `pages` (of the site rooted at `site`) from the site alone; False (nothing
    changed) when the vendored files are not installed."""
    if not available():
        return False
    _copy_vendor(site)
    for page in pages:
        if page.is_file():
            localize_page(page, site)
    return True
