"""Screenshot of an explorer page in Debian's chromium driven by Playwright (no
browser download: ``executable_path``), after a few interactions so the picture
shows the page in use:

    python -m sfvq_ext.explore.screenshot PAGE.html OUT.png [--frame K] [--group coarse]

Moves the slider to frame K (default: the middle), toggles the first segment's
layer group (default: keep the suggested range), and takes a full-width shot of
the top ``--height`` pixels.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def screenshot(page_path, png, *, frame: int | None = None, group: str | None = None, width: int = 1200,
               height: int = 1800, chromium: str | None = None) -> Path:
    from playwright.sync_api import sync_playwright

    chromium = chromium or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        raise FileNotFoundError("no chromium found (Debian: apt-get install chromium)")
    page_path, png = Path(page_path).resolve(), Path(png).resolve()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_path.as_uri())
            n = int(page.locator("#slider").get_attribute("max")) + 1
            page.evaluate("k => { const s = document.getElementById('slider'); s.value = k; "
                          "s.dispatchEvent(new Event('input')); }", n // 2 if frame is None else frame)
            if group is not None:
                page.locator(f'.segment .toggle[data-group="{group}"]').first.click()
            page.evaluate("() => document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            page.screenshot(path=str(png), clip={"x": 0, "y": 0, "width": width, "height": height})
        finally:
            browser.close()
    return png


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page")
    p.add_argument("png")
    p.add_argument("--frame", type=int, default=None)
    p.add_argument("--group", default=None)
    p.add_argument("--height", type=int, default=1800)
    args = p.parse_args(argv)
    print(screenshot(args.page, args.png, frame=args.frame, group=args.group, height=args.height))


if __name__ == "__main__":
    main()
