"""MkDocs hook: fills docs/reference/settings.md with the table rendered from the Settings
class (crewq/settings_reference.py) at every build, so the page cannot drift from the code."""

from typing import Any

from crewq.settings_reference import render

MARKER = "<!-- settings-table -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
