"""Look at the built site at a desktop and a phone width in headless Chromium.

``python docs/_screenshots/check_widths.py BUILD_DIR [OUT_DIR]``: every page
of ``BUILD_DIR`` (a Sphinx HTML build) is loaded at 1400 px and 390 px wide;
a script in the page lists what ends right of the viewport and is not inside
a box that scrolls sideways (what a reader cannot reach), and pages with any
are printed (exit status 1). Full-page screenshots of the pages in
:data:`SHOTS`, at both widths, go to ``OUT_DIR`` (default: this directory)
for a person to look at.

Needs the ``playwright`` package and Debian's ``chromium`` (playwright's own
browser download is not used). Offline: pages are loaded from files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

WIDTHS = (1400, 390)
#: Page (without .html) -> screenshot name.
SHOTS = {"index": "front", "quickstart": "quickstart", "benchmarks": "benchmarks", "cli": "cli"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: What ends right of the viewport, outside any box in the article that
#: scrolls sideways.
PROBE = """() => {
  const W = document.documentElement.clientWidth, out = [];
  if (document.documentElement.scrollWidth > W + 1)
    out.push('PAGE is ' + document.documentElement.scrollWidth + ' px wide');
  const reachable = (el) => {
    // Furo's whole text column scrolls: a box inside the page's article must.
    for (let p = el.parentElement; p && p.tagName !== 'ARTICLE'; p = p.parentElement) {
      const x = getComputedStyle(p).overflowX;
      if (x === 'auto' || x === 'scroll') return p.getBoundingClientRect().right <= W + 1;
    }
    return false;
  };
  for (const el of document.querySelectorAll('article *')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 1 && !reachable(el))
      out.push(el.tagName + '.' + el.className + ' right=' + Math.round(r.right) + ': '
               + (el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 70));
  }
  return out;
}"""


def main() -> int:
    build = Path(sys.argv[1]).resolve()
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent
    pages = [
        page
        for page in sorted(build.rglob("*.html"))
        if not page.relative_to(build).parts[0].startswith("_")
        and page.stem not in ("genindex", "search", "py-modindex")
    ]
    bad = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            for width in WIDTHS:
                view = browser.new_page(viewport={"width": width, "height": 900})
                for page in pages:
                    name = page.relative_to(build).with_suffix("").as_posix()
                    view.goto(page.as_uri())
                    problems = view.evaluate(PROBE)
                    if problems:
                        bad += 1
                        print(f"{name} @ {width}px: {len(problems)} cut off")
                        print("\n".join(f"    {line}" for line in problems[:8]))
                    if name in SHOTS:
                        view.screenshot(path=out_dir / f"{SHOTS[name]}-{width}.png", full_page=True)
                view.close()
        finally:
            browser.close()
    print(f"{len(pages)} pages at {len(WIDTHS)} widths: {bad} with something cut off")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
