"""The image's HEALTHCHECK: GET /healthz on the port the container's config listens on.

Exit 0 when /healthz answers 200, else 1 with one line saying why (Docker keeps it in
`docker inspect`). The port comes from the same config `monitor run` reads ($MONITOR_CONFIG),
so a config that moves the server to another port keeps a truthful health check.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from monitor.config import config_path, load_settings
from monitor.errors import MonitorError

ANY_ADDRESS = {"", "0.0.0.0", "::"}


def main() -> int:
    try:
        http = load_settings(config_path(None), require_drop=False).http
    except MonitorError as exc:
        print(f"healthcheck: {exc}")
        return 1
    host = "127.0.0.1" if http.host in ANY_ADDRESS else http.host
    url = f"http://{host}:{http.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"healthcheck: {url}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
