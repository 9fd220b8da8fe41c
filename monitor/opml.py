"""The OPML list of every feed (`/feeds.opml`): one import subscribes a reader to all. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.escape import escape_html, xml_safe


def render(title: str, feeds: Sequence[tuple[str, str, str]]) -> bytes:
    """OPML 2.0 for (title, feed URL, page URL) triples, in order."""
    outlines = "\n".join(
        f'    <outline type="rss" text="{escape_html(t)}" title="{escape_html(t)}" '
        f'xmlUrl="{escape_html(xml)}" htmlUrl="{escape_html(page)}"/>'
        for t, xml, page in feeds)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">\n'
        f"  <head><title>{escape_html(xml_safe(title))}</title></head>\n"
        f"  <body>\n{outlines}\n  </body>\n</opml>\n"
    ).encode()
