"""Building blocks every page layout uses."""

from __future__ import annotations

from dash import html

from app.components import ids


def page_header(title: str, description: str) -> html.Header:
    """The heading of a page and one line saying what the page holds.

    Args:
        title: Page heading (rendered as text).
        description: One sentence under the heading (rendered as text).
    """
    return html.Header(
        [
            html.H1(title, id=ids.PAGE_TITLE, className="h3 mb-1"),
            html.P(description, id=ids.PAGE_DESCRIPTION, className="text-body-secondary mb-4"),
        ]
    )
