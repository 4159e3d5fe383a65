"""The docs site (built by `make docs` before pytest in `make test`) has a page per notebook, and its pages link up."""
import json, re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

SITE = Path(__file__).resolve().parents[1] / "_docs"
NBS = Path(__file__).resolve().parents[1] / "nbs"


class _Text(HTMLParser):
    "The visible words of a page (tags, scripts and styles dropped)."
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"): self.skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"): self.skip -= 1

    def handle_data(self, data):
        if not self.skip: self.parts.append(data)


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{3,}", text)


def first_body_words(nb: Path, n: int = 8) -> list[str]:
    "The first words of the markdown cell after the title cell: what a reader meets first."
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    md = [c for c in cells if c["cell_type"] == "markdown"]
    if len(md) < 2: return []
    line = next(l for l in "".join(md[1]["source"]).splitlines() if l.strip())
    return _words(re.sub(r"\]\([^)]*\)", " ", line))[:n]  # a link's text stays, its address goes


class _Attrs(HTMLParser):
    "The values of one attribute of one tag, in page order (`<a href>`, `<img src>`)."
    def __init__(self, tag: str, attr: str):
        super().__init__()
        self.tag, self.attr, self.values = tag, attr, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == self.tag and a.get(self.attr): self.values.append(a[self.attr])


def _local_links(page: Path) -> list[Path]:
    p = _Attrs("a", "href")
    p.feed(page.read_text(encoding="utf-8"))
    out = []
    for href in p.values:
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


def test_front_matter_is_title_and_description_only():
    "nbdev turns the first markdown cell into the page's title and description and drops the rest of it."
    for nb in NBS.glob("*.ipynb"):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        md = next((c for c in cells if c["cell_type"] == "markdown"), None)
        assert md is not None, f"{nb.name} has no markdown cell (title)"
        extra = [l for l in "".join(md["source"]).splitlines() if l.strip() and not l.startswith(("# ", ">"))]
        assert not extra, f"{nb.name}: the first markdown cell holds more than '# Title' and '> description': {extra[0]!r}"


def test_each_page_opens_with_its_intro(pages):
    "The notebook's first body sentence reaches its page (it was lost on every page when it sat in the front matter)."
    for nb in NBS.glob("*.ipynb"):
        words = first_body_words(nb)
        if not words: continue
        p = _Text()
        p.feed(pages[f"{nb.stem}.html"].read_text(encoding="utf-8"))
        page = _words(" ".join(p.parts))
        n = len(words)
        assert any(page[i:i + n] == words for i in range(len(page) - n + 1)), \
            f"{nb.stem}.html does not show the first sentence of {nb.name}: {' '.join(words)}"


def test_sidebar_has_every_notebook_once_in_a_section():
    "The sidebar is written by hand (custom_sidebar) in sections: a new notebook must be placed in one."
    import yaml
    side = yaml.safe_load((NBS / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    sections = {c["section"]: c["contents"] for c in side if isinstance(c, dict)}
    assert set(sections) == {"Running", "Analysis", "Library"}, sections.keys()
    listed = [p for c in side for p in ([c] if isinstance(c, str) else c["contents"])]
    nbs = sorted(nb.name for nb in NBS.glob("*.ipynb") if not nb.name.startswith("_"))
    assert sorted(listed) == nbs, f"nbs/sidebar.yml and nbs/ differ: {sorted(set(listed) ^ set(nbs))}"


def test_sidebar_sections_rendered(pages):
    html = pages["index.html"].read_text(encoding="utf-8")
    for section in ("Running", "Analysis", "Library"):
        assert re.search(rf">\s*{section}\s*<", html), f"index.html has no sidebar section {section}"


@pytest.mark.parametrize("page,at_least", [("train.html", 3), ("analysis_weights.html", 4), ("analysis_passk.html", 2),
                                           ("06_weighting.html", 1), ("index.html", 3)])
def test_pages_show_their_figures(pages, page, at_least):
    "The run and analysis pages show the committed demo's plots (tools/figures.py), 06_weighting its heat-map."
    p = _Attrs("img", "src")
    p.feed(pages[page].read_text(encoding="utf-8"))
    pictures = [s for s in p.values if s.startswith("data:image/png") or s.endswith(".png")]
    assert len(pictures) >= at_least, f"{page} shows {len(pictures)} figures: {p.values}"
    for src in pictures:
        if src.startswith("data:"): continue
        f = (pages[page].parent / src).resolve()
        assert f.is_file(), f"{page}: {src} is not on the site"
        assert f.stat().st_size <= 200_000, f"{page}: {src} is {f.stat().st_size} bytes (at most 200 KB)"


def test_api_page_renders_show_doc(pages):
    html = pages["00_files.html"].read_text(encoding="utf-8")
    assert re.search(r"atomic_write", html) and "<h" in html
    assert "#| export" not in html and "#| hide" not in html, "directives leaked into the rendered page"
    # tests that document behaviour are shown (fastcore's way: the visible test is the documentation)
    assert "test_eq(" in html, "00_files shows no test: the page should show how its functions behave"
