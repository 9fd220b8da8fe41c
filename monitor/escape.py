"""Bulletin text made safe for XML and HTML: one place for the feeds, the pages and the mail. Pure."""

from __future__ import annotations

import html
import re

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Drop the characters XML 1.0 cannot carry at all."""
    return _NOT_XML.sub("", text)


def escape_html(text: str) -> str:
    """Bulletin text for any HTML (feed content, pages, mail): shown as text, never markup."""
    return html.escape(xml_safe(text), quote=True)
