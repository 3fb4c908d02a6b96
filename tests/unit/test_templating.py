"""Compiled templates are cached between runs without changing a byte of what they render."""

from __future__ import annotations

from pathlib import Path

import pytest

from qcompile import templating


def _render(directory: Path, name: str) -> str:
    env = templating.environment(directory, {})
    return env.get_template(name).render(rows=[{"a": "x|y"}, {"a": "<b>"}])


def test_the_cache_is_filled_reused_and_follows_an_edited_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates, cache = tmp_path / "templates", tmp_path / "cache"
    templates.mkdir()
    (templates / "t.md.j2").write_text("{% for r in rows %}| {{ r.a | md }} |\n{% endfor %}")
    monkeypatch.setenv("QCOMPILE_TEMPLATE_CACHE", str(cache))
    first = _render(templates, "t.md.j2")
    assert first == "| x\\|y |\n| &lt;b&gt; |\n"
    (entry,) = cache.iterdir()
    written = entry.stat().st_ino  # the cache replaces a changed entry with a new file
    assert _render(templates, "t.md.j2") == first
    assert entry.stat().st_ino == written  # loaded from the cache, not compiled and stored
    (templates / "t.md.j2").write_text("{% for r in rows %}* {{ r.a | md }}\n{% endfor %}")
    assert _render(templates, "t.md.j2") == "* x\\|y\n* &lt;b&gt;\n"  # checksum differs
    assert entry.stat().st_ino != written
    monkeypatch.setenv("QCOMPILE_TEMPLATE_CACHE", "off")
    assert templating.environment(templates, {}).bytecode_cache is None


def test_config_text_reaches_markdown_without_invisible_characters_links_or_html() -> None:
    from qcompile.templating import markdown_cell

    hostile = "a\x00b\x1b[31m | ![t](https://evil.example/b.png) <img src=x> \u202eexe.txt\nz"
    cell = markdown_cell(hostile)
    assert cell == ("ab\\[31m \\| !\\[t\\](https://evil.example/b.png) &lt;img src=x&gt; exe.txt z")
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in cell)
