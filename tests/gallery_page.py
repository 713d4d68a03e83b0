"""A gallery (``vmarket browse``) opened in headless Chromium through Playwright, for tests/test_gallery.py: the
browser's path and flags, and a page that walks every page of a gallery, scrolling until its thumbnails load."""
import os
from pathlib import Path

CHROMIUM = os.environ.get("VMARKET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# scroll down half a viewport at a time, so that every lazy thumbnail of the page comes near the viewport and loads
SCROLL = """async () => {
  for (let y = 0; y < document.body.scrollHeight; y += innerHeight / 2) {
    scrollTo(0, y);
    await new Promise((r) => setTimeout(r, 30));
  }
  scrollTo(0, document.body.scrollHeight);
}"""
IDENTITIES = """() => [...document.querySelectorAll("section.identity")].map((s) => ({
  pid: Number(s.dataset.pid),
  generated: Number(s.querySelector(".n-gen").textContent),
  real: Number(s.querySelector(".n-real") ? s.querySelector(".n-real").textContent : 0),
  realShown: [...s.querySelectorAll(".realpic")].map((f) => Number(f.dataset.cam)),
  cards: [...s.querySelectorAll(".card")].map((c) => [c.dataset.origin, Number(c.dataset.cam), c.dataset.kept]),
  roles: [...s.querySelectorAll(".card .part .role")].map((r) => r.textContent),
  sampled: s.querySelectorAll(".card .sampled").length,
  reasons: [...s.querySelectorAll(".reason")].map((r) => r.textContent),
}))"""


class Page:
    """A gallery opened from disk in a fresh tab; JavaScript errors are collected in ``errors``."""

    def __init__(self, browser, folder: Path):
        self.tab = browser.new_page(viewport={"width": 1280, "height": 1600})
        self.errors = []
        self.tab.on("pageerror", lambda e: self.errors.append(str(e)))
        self.tab.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.tab.goto((folder / "index.html").as_uri())
        self.tab.wait_for_selector("body[data-state=ready]")

    def click(self, group: str, value: str) -> None:
        self.tab.click(f'.group[data-filter="{group}"] button[data-value="{value}"]')
        self.tab.wait_for_selector("body[data-state=ready]")

    def walk(self) -> list[dict]:
        """Every page in turn, each scrolled through until its thumbnails have loaded (each checked: its
        naturalWidth is not 0); what each identity shows."""
        shown = []
        while True:
            self.tab.evaluate(SCROLL)
            self.tab.wait_for_function("[...document.images].every((i) => i.complete)")
            broken = self.tab.evaluate("[...document.images].filter((i) => !(i.naturalWidth > 0)).map((i) => i.src)")
            assert broken == [], broken[:3]
            shown += self.tab.evaluate(IDENTITIES)
            following = self.tab.locator("button.next").first
            if following.is_disabled():
                break
            now = self.tab.evaluate("document.body.dataset.page")
            following.click()
            self.tab.wait_for_function(f"document.body.dataset.state === 'ready' && document.body.dataset.page !== "
                                       f"'{now}'")
        assert self.errors == []
        return shown
