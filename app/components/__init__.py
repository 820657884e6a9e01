"""Reusable pieces of the studio's Dash interface: the shell, the navigation, page headers, ids."""

from __future__ import annotations

from app.components import ids
from app.components.page import page_header
from app.components.shell import navbar, shell_layout

__all__ = ["ids", "navbar", "page_header", "shell_layout"]
