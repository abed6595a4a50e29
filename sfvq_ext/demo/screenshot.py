"""Screenshot a report page with headless Chromium (Debian's ``chromium`` package).

    python -m sfvq_ext.demo.screenshot sfvq-demo/index.html sfvq-demo/screenshot.png

Before the screenshot, every local ``src``/``href`` in the page is checked to
exist: a broken link is an error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def broken_links(page: Path) -> list[str]:
    """Local files the page refers to (img src, a href) that do not exist."""
    text = page.read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', text)
    local = [r for r in refs if not re.match(r"^[a-z]+:", r) and not r.startswith("#")]
    return [r for r in local if not (page.parent / r).is_file()]


def screenshot(page: str | Path, png: str | Path, width: int = 1200, height: int = 4000) -> Path:
    page, png = Path(page).resolve(), Path(png).resolve()
    broken = broken_links(page)
    if broken:
        raise ValueError(f"{page} has broken links: {broken}")
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        # no sandbox (runs as root in CI); no background networking: this machine has no network
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={width},{height}",
                        f"--screenshot={png}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot to {png}")
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(screenshot(sys.argv[1], sys.argv[2]))
