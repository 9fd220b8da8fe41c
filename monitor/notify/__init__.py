"""Channels: where stories go besides the feed. A registry of `Channel` implementations by name.

Adding a channel is one module: a `Channel` subclass (monitor.notify.abc) and a line in
`_FACTORIES`; the outbox, retries, subscribers and status work the same for every channel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.notify.abc import Channel

# Imported on first use: Apprise (and its plugins) cost a start-up only where it is used.
_FACTORIES = {"email": "monitor.notify.email:EmailChannel", "apprise": "monitor.notify.apprise:AppriseChannel"}
_LOADED: dict[str, Channel] = {}


def channel(name: str) -> Channel:
    if name not in _LOADED:
        module, _, cls = _FACTORIES[name].partition(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]
