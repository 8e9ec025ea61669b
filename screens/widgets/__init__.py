"""Reusable widgets of the control room."""

from __future__ import annotations

from screens.widgets.footer import ControlFooter
from screens.widgets.header import ControlHeader
from screens.widgets.status import status_content, status_markup, status_text, theme_colour

__all__ = ["ControlFooter", "ControlHeader", "status_content", "status_markup", "status_text", "theme_colour"]
