"""The /ui page's files as shipped in the package: complete, self-contained, CSP-compatible."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

from agent.server import ui


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline_scripts = 0
        self.style_tags = 0
        self.style_attributes = 0
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in names
            if names.get("src"):
                self.references.append(str(names["src"]))
        if tag == "link" and names.get("href"):
            self.references.append(str(names["href"]))
        if tag == "style":
            self.style_tags += 1
        if "style" in names:
            self.style_attributes += 1
        self.handlers += [name for name in names if name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def _text(name: str) -> str:
    return resources.files(ui).joinpath(name).read_text(encoding="utf-8")


def test_every_asset_is_in_the_package() -> None:
    """Each file ASSETS names exists in agent/server/ui (package data, so a wheel carries it)."""
    for name, _kind in ui.ASSETS.values():
        assert resources.files(ui).joinpath(name).is_file(), name


def test_page_has_no_inline_script_or_style_and_only_local_references() -> None:
    """index.html has no inline script, style or event handler (CSP forbids them) and references only /ui assets."""
    page = _Page()
    page.feed(_text("index.html"))
    assert page.inline_scripts == page.style_tags == page.style_attributes == 0
    assert page.handlers == []
    assert page.references and set(page.references) <= ui.PATHS


def test_scripts_import_only_shipped_modules_and_fetch_only_status() -> None:
    """The JS modules import only /ui modules, reach no other origin, never parse HTML from data."""
    for name, kind in ui.ASSETS.values():
        if kind != "text/javascript":
            continue
        source = _text(name)
        for target in re.findall(r'^import .* from "([^"]+)";', source, re.MULTILINE):
            assert target in ui.PATHS, (name, target)
        assert re.findall(r'fetch\("([^"]+)"', source) in ([], ["/status"]), name
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source, name
        assert "https://" not in source and "http://" not in source.replace("http://www.w3.org/2000/svg", ""), name


def test_stylesheet_has_light_and_dark_themes() -> None:
    """style.css defines its colours as variables and overrides them for prefers-color-scheme: dark."""
    css = _text("style.css")
    assert ":root" in css and "--bg:" in css
    dark = css.split("@media (prefers-color-scheme: dark)", 1)
    assert len(dark) == 2 and "--bg:" in dark[1]
    assert "@import" not in css and "url(" not in css  # nothing fetched from anywhere
