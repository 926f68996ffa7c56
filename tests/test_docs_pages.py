"""The docs' entry path stays whole: every extra of pyproject.toml is on the Installation page,
every guide page is in the guide's toctree, and every README section a docs page includes
(MyST ``{include}`` with start-after / end-before) is there, once (an edit that renames a
heading fails here with the page's name, as well as in ``make docs``)."""
from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_installation_page_lists_every_extra():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads(read("pyproject.toml"))["project"]["optional-dependencies"]
    page = read("docs", "guide", "install.md")
    rows = set(re.findall(r"^\| `([\w-]+)` \|", page, re.M))
    assert set(extras) <= rows, set(extras) - rows


def test_every_guide_page_is_in_the_toctree_and_new_pages_are_linked():
    index = read("docs", "guide", "index.md")
    toctree = re.search(r"```\{toctree\}\n(.*?)```", index, re.S).group(1).split()
    pages = sorted(n[:-3] for n in os.listdir(os.path.join(DOCS, "guide")) if n.endswith(".md")
                   and n != "index.md")
    assert set(pages) <= set(toctree), set(pages) - set(toctree)
    site = read("docs", "index.md")
    for page in ("guide/install", "guide/tutorial", "guide/faq", "guide/benchmarks"):
        assert "{doc}`" + page + "`" in site
    assert re.search(r"^changelog$", site, re.M)
    readme = read("README.md")
    for path in ("docs/guide/install.md", "docs/guide/tutorial.md", "docs/guide/notebooks.md",
                 "docs/guide/faq.md", "docs/guide/benchmarks.md", "docs/changelog.md"):
        assert f"]({path})" in readme and os.path.isfile(os.path.join(ROOT, path))


def test_include_markers_name_sections_that_exist_once():
    found = 0
    for folder, _, names in os.walk(DOCS):
        if "_build" in folder or "gallery" in folder:
            continue
        for name in names:
            if not name.endswith(".md"):
                continue
            text = read(os.path.relpath(os.path.join(folder, name), ROOT))
            for target, opts in re.findall(r"```\{include\} (\S+)\n((?::[^\n]*\n)*)", text):
                source = read(os.path.relpath(os.path.normpath(os.path.join(folder, target)),
                                              ROOT))
                for key, marker in re.findall(r':(start-after|end-before): "([^"]*)"', opts):
                    found += 1
                    # docutils cuts at the first occurrence: a second one would move it
                    assert source.count(marker) == 1, (name, key, marker, source.count(marker))
    assert found >= 20
