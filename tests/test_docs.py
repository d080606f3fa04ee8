"""The documentation site: it builds with warnings as errors, its links resolve, every public
name has a reference entry, every guide and notebook ran, and it renders in headless Chromium.

The site is built once (``python -m sphinx -W --keep-going -b html docs <tmp>``), which executes
every guide and notebook: about two to three minutes on 2 CPU cores. All checks run in one test,
so that the build happens on one pytest-xdist worker while the other keeps running the rest of
the suite; every failing check is reported. The browser check needs Chromium
(``apt-get install chromium``; ``.ci/run`` installs it) and fails without it.
"""

from __future__ import annotations

import ast
import functools
import html
import http.server
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD_TIMEOUT_S = 900


def _jopt_api():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import jopt_api
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return jopt_api


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site; fails with the build's warnings and errors.

    ``JOPT_DOCS_SITE=<dir>`` checks a site already built there instead (while editing the docs).
    """
    if os.environ.get("JOPT_DOCS_SITE"):
        return Path(os.environ["JOPT_DOCS_SITE"])
    tmp = tmp_path_factory.mktemp("docs")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the suite's 8 simulated devices are not the kernels' business
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
    cmd += ["-d", str(tmp / "doctrees"), str(DOCS), str(tmp / "html")]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the docs build took more than {BUILD_TIMEOUT_S} s:\n{e.stderr or ''}")
    if proc.returncode != 0:
        log = (proc.stdout[-20000:] + proc.stderr[-20000:]).strip()
        pytest.fail(f"the docs build failed (rc {proc.returncode}); its warnings and errors:\n{log}")
    return tmp / "html"


class _Page(HTMLParser):
    """The ids and the link targets (href / src) of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(attrs[key])


@functools.cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _inventory(site: Path) -> dict[str, str]:
    """``{name: uri}`` of every Python object in the built site's ``objects.inv``."""
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    data = inventory.data if hasattr(inventory, "data") else inventory
    uri = lambda item: getattr(item, "uri", None) or item[2]  # noqa: E731 (an item or, before Sphinx 8.2, a tuple)
    return {
        name: uri(item)
        for kind, items in data.items()
        if kind.startswith("py:")
        for name, item in items.items()
    }


def check_the_build_wrote_the_site(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()
    assert (site / "search.html").is_file() and (site / "searchindex.js").is_file()


def check_guides_and_notebooks_ran(site):
    conf = {  # the constant settings of conf.py, read without running it
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse((DOCS / "conf.py").read_text()).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    assert conf["nb_execution_raise_on_error"] is True  # a failing cell fails the build (and this test)
    assert conf["nb_execution_mode"] == "force"  # every build runs every cell
    pages = sorted((DOCS / "guides").glob("*.md")) + sorted((DOCS / "notebooks").glob("*.ipynb"))
    assert len(pages) >= 10
    executed = []
    for page in pages:
        source = page.read_text()
        if "{code-cell}" not in source and '"cell_type": "code"' not in source:
            continue
        built = (site / page.relative_to(DOCS).with_suffix(".html")).read_text()
        assert "cell_output" in built, f"{page.name}: its code cells produced no output"
        assert "Traceback (most recent call last)" not in built, f"{page.name} shows a traceback"
        executed.append(page.name)
    assert "sweep_on_accelerators.ipynb" in executed and len(executed) >= 9, executed


def check_internal_links_and_anchors_resolve(site):
    broken = []
    for page in sorted(site.rglob("*.html")):
        if page.relative_to(site).parts[0] in ("_static", "_sources"):  # theme templates, not pages
            continue
        for link in _parse(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link} (no such file)")
            elif (
                parts.fragment
                and target.suffix == ".html"
                and unquote(parts.fragment) not in _parse(target).ids
            ):
                broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:50])


def check_every_public_name_has_a_reference_entry(site):
    inventory = _inventory(site)
    names = _jopt_api().public_names()
    assert set(names) >= {
        "jopt",
        "jopt.schedules",
        "jopt.sweep",
        "jopt.distributed",
        "jopt.precision",
        "jopt.contrib",
    }
    missing = [
        f"{ns}.{n}" for ns, ns_names in names.items() for n in ns_names if f"{ns}.{n}" not in inventory
    ]
    assert not missing, f"public names without a reference entry: {missing}"
    # Every entry (aliases included) points at an anchor that exists on its page.
    dangling = []
    for ns, ns_names in names.items():
        for n in ns_names:
            uri = inventory[f"{ns}.{n}"]
            path, _, anchor = uri.partition("#")
            if anchor not in _parse(site / path).ids:
                dangling.append(f"{ns}.{n} -> {uri}")
    assert not dangling, f"reference entries without their anchor: {dangling}"
    # jopt.contrib's page links every name to the entry documenting it.
    linked = {urlsplit(link).fragment for link in _parse(site / "api" / "jopt_contrib.html").links}
    unlinked = [
        n for n in names["jopt.contrib"] if inventory[f"jopt.contrib.{n}"].partition("#")[2] not in linked
    ]
    assert not unlinked, f"jopt.contrib names not linked to an entry: {unlinked}"


def check_reference_entries_render_the_docstrings(site):
    inventory = _inventory(site)
    page = (site / inventory["jopt.adamw"].partition("#")[0]).read_text()
    start = page.index('id="jopt.adamw"')
    entry = page[start : page.find('<dl class="py', start)]  # up to the next entry
    text = html.unescape(re.sub(r"<[^>]+>", "", entry))
    assert 'class="math' in entry  # the update rule, rendered by MathJax
    assert ">>> " in text and "jopt.adamw(" in text  # the doctest example
    assert "Parameters" in text and "learning_rate" in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail(
        "headless Chromium is needed for the browser check: apt-get install chromium (.ci/run does it)"
    )


@contextmanager
def _serve(site: Path):
    """The site over HTTP on localhost (the search page needs its scripts, so no file:// URLs)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _browse(url: str, tmp_path: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after its scripts ran (or a screenshot of it), in headless Chromium."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--window-size=1280,900",
    ]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"chromium failed on {url}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def check_the_site_renders_in_headless_chromium(site, tmp_path):
    """Front page, an API page and the search page: title, a known entry in the DOM, a screenshot."""
    api_page = _inventory(site)["jopt.adamw"].partition("#")[0]
    pages = {
        "index.html": ["Getting started", "Coming from optax", "API reference"],
        api_page: ['id="jopt.adamw"', "adamw"],
        "search.html?q=adamw": ["jopt.adamw"],
    }
    with _serve(site) as server:
        for i, (page, expected) in enumerate(pages.items()):
            url = f"{server}/{page}"
            dom = _browse(url, tmp_path)
            title = re.search(r"<title>(.*?)</title>", dom, re.S)
            assert title and "jopt" in title.group(1), f"{url}: page title {title and title.group(1)!r}"
            for text in expected:
                assert text in dom, f"{url}: {text!r} not in the rendered page"
            if page.startswith("search.html"):
                # The results list is written by the search script: it must link to the entry.
                results = dom[dom.find('id="search-results"') :]
                assert re.search(r'href="[^"]*#jopt\.adamw"', results), (
                    f"{url}: no search result for jopt.adamw"
                )
            png = tmp_path / f"page-{i}.png"
            _browse(url, tmp_path, screenshot=png)
            data = png.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, (
                f"{url}: screenshot of {len(data)} bytes"
            )


def test_documentation_site(site, tmp_path):
    """Every check on the one build (in one test, so on one xdist worker); all failures reported."""
    checks = [
        check_the_build_wrote_the_site,
        check_guides_and_notebooks_ran,
        check_internal_links_and_anchors_resolve,
        check_every_public_name_has_a_reference_entry,
        check_reference_entries_render_the_docstrings,
        functools.partial(check_the_site_renders_in_headless_chromium, tmp_path=tmp_path),
    ]
    failures = []
    for check in checks:
        try:
            check(site)
        except (AssertionError, pytest.fail.Exception) as error:
            failures.append(f"{getattr(check, 'func', check).__name__}: {error}")
    assert not failures, "\n\n".join(failures)
