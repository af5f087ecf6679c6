"""The web page's files as the package ships them: nothing inline, nothing from elsewhere, no markup from data."""

import re

import pytest

from facegraph.graph import webui

PAGE = webui.read("index.html").decode()
SCRIPT = webui.read("ui.js").decode()
STYLE = webui.read("ui.css").decode()


def test_every_served_file_is_in_the_package():
    assert {name for name, _ in webui.FILES.values()} == {"index.html", "ui.js", "ui.css"}
    assert set(webui.PATHS) == {"/ui", "/ui/ui.js", "/ui/ui.css"}


def test_page_has_nothing_inline():
    # The CSP would refuse these; the page must not depend on them.
    assert re.findall(r"<script\b[^>]*>", PAGE) == ['<script src="ui/ui.js" defer>']
    assert "<style" not in PAGE and not re.search(r"\sstyle\s*=", PAGE)
    assert not re.search(r"\son[a-z]+\s*=", PAGE)  # no inline event handlers


def test_nothing_is_fetched_from_outside():
    for text in (PAGE, SCRIPT, STYLE):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org/2000/svg", ""))
        assert "@import" not in text


@pytest.mark.parametrize("sink", ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"style\""])
def test_script_never_turns_data_into_markup(sink):
    assert sink not in SCRIPT


def test_key_stays_in_the_page():
    for store in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert store not in SCRIPT
    assert '"X-API-Key"' in SCRIPT  # sent as a header only


def test_csp_is_strict():
    directives = dict(d.strip().split(" ", 1) for d in webui.CSP.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self'" and directives["img-src"] == "'self' blob: data:"
    assert directives["default-src"] == "'none'"


def test_the_page_stays_public_under_a_route_prefix():
    """Serve keeps its route prefix in the path (and names it root_path): the guard looks at the app's own path."""
    from facegraph.graph.http import PUBLIC_PATHS, app_path

    assert app_path({"path": "/default/ui", "root_path": "/default"}) == "/ui" in PUBLIC_PATHS
    assert app_path({"path": "/ui/ui.js", "root_path": ""}) == "/ui/ui.js"
    assert app_path({"path": "/default", "root_path": "/default"}) == "/"
    assert app_path({"path": "/other/ui", "root_path": "/default"}) == "/other/ui"
