"""The docs site (built by `make docs` before pytest in `make test`) has a page per notebook, and its pages link up."""
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

SITE = Path(__file__).resolve().parents[1] / "_docs"
NBS = Path(__file__).resolve().parents[1] / "nbs"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"): self.links.append(a["href"])


def _local_links(page: Path) -> list[Path]:
    p = _Links()
    p.feed(page.read_text(encoding="utf-8"))
    out = []
    for href in p.links:
        href = urldefrag(href).url
        if not href or urlparse(href).scheme or href.startswith(("mailto:", "//")): continue
        out.append((page.parent / href).resolve())
    return out


@pytest.fixture(scope="module")
def pages() -> dict[str, Path]:
    if not (SITE / "index.html").exists():
        pytest.fail("no docs site: run `make docs` first (make test does)")
    return {p.relative_to(SITE).as_posix(): p for p in SITE.rglob("*.html")}


def test_every_notebook_has_a_page(pages):
    for nb in NBS.glob("*.ipynb"):
        if nb.name.startswith("_"): continue
        assert f"{nb.stem}.html" in pages, f"{nb.name} has no page in _docs/"


def test_index_links_to_every_page_and_links_resolve(pages):
    index_targets = set(_local_links(pages["index.html"]))
    for name, page in pages.items():
        assert page.resolve() in index_targets or name == "index.html", f"index.html does not link to {name}"
        for target in _local_links(page):
            assert target.exists(), f"{name} links to missing {target.relative_to(SITE.resolve())}"


def test_api_page_renders_show_doc(pages):
    html = pages["00_files.html"].read_text(encoding="utf-8")
    assert re.search(r"atomic_write", html) and "<h" in html
    assert "#| export" not in html and "#| hide" not in html, "directives leaked into the rendered page"
    assert "test_eq(" not in html, "hidden test cells leaked into the rendered page"
