"""The HTML report in a real browser: headless Chromium at 1400 px loads it, and one can use it.

A probe script is put at the top of a copy of the page. After the page has loaded it records every error and
console.error; measures every element against the page's width (a wide table must scroll inside its own box);
counts the 3-D canvas's painted pixels and hovers the predicted word's star; clicks a head in the grid and
checks that the enlarged pattern is that head's; chooses another word and checks that the highlight moved in
the text, the 3-D view, the lens table and the lens grid; lists every resource the page loaded. It writes its
findings as JSON into the DOM, which `chromium --dump-dom` prints. Skipped only when no Chromium binary is
installed (Debian: `chromium`)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from minigpt_geom.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PAGE_WIDTH = 1400

PROBE = """<script>
window.__probe = { errors: [] };
window.addEventListener("error", (e) => window.__probe.errors.push("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => window.__probe.errors.push("rejection: " + e.reason));
const consoleError = console.error;
console.error = (...args) => { window.__probe.errors.push("console.error: " + args.join(" ")); consoleError(...args); };
window.addEventListener("load", () => setTimeout(() => {
  const probe = window.__probe, page = document.documentElement.clientWidth;
  const pixels = (c) => c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const differ = (a, b) => { let n = 0; for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++; return n; };

  // no element wider than the page, unless it lies inside a box that scrolls
  probe.page = { width: page, scrollWidth: document.documentElement.scrollWidth };
  probe.tooWide = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest(".scroll") && !el.classList.contains("scroll")) continue;
    const box = el.getBoundingClientRect();
    if (box.width > page || box.right > page + 1) probe.tooWide.push(el.tagName + "#" + el.id + "." + el.className + " " + Math.round(box.right));
  }

  // the 3-D view is drawn; hovering the predicted word's star names it
  const canvas = document.getElementById("trajectory-canvas"), box = canvas.getBoundingClientRect();
  const ratio = canvas.width / box.width;
  let before = pixels(canvas), painted = 0, star = null;
  const colours = new Set();
  for (let i = 0; i < before.length; i += 4) {
    const rgb = [before[i], before[i + 1], before[i + 2]].join();
    if (rgb !== "251,251,253") { painted++; colours.add(rgb); }
    if (star === null && rgb === "255,165,0") star = i / 4;
  }
  probe.canvas = { width: canvas.width, height: canvas.height, painted, colours: colours.size };
  if (star !== null) {
    const x = box.left + (star % canvas.width) / ratio + 1, y = box.top + Math.floor(star / canvas.width) / ratio + 1;
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: x, clientY: y, bubbles: true }));
    const tip = document.getElementById("trajectory-tip");
    probe.tooltip = { shown: tip.style.display === "block", text: tip.textContent };
  }

  // clicking a head in the grid enlarges its pattern
  const big = document.getElementById("pattern-canvas"), cell = document.querySelector('#head-grid canvas[data-layer="1"][data-head="2"]');
  const bigBefore = pixels(big);
  probe.gridCells = document.querySelectorAll("#head-grid canvas").length;
  cell.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  probe.head = { layer: big.dataset.layer, head: big.dataset.head, changed: differ(bigBefore, pixels(big)),
                 chosen: cell.classList.contains("chosen"), title: document.getElementById("pattern-title").textContent,
                 selects: [document.getElementById("layer-select").value, document.getElementById("head-select").value] };

  // choosing another word moves the highlight everywhere
  const select = document.getElementById("word-select"), first = +select.value, other = first === 1 ? 2 : 1;
  before = pixels(canvas);
  select.value = String(other);
  select.dispatchEvent(new Event("change", { bubbles: true }));
  const highlighted = Array.from(document.querySelectorAll("#text .token.highlight")).map((s) => +s.dataset.position);
  const rows = Array.from(document.querySelectorAll(".lens-grid tr.chosen")).map((r) => +r.dataset.position);
  probe.word = { first, other, highlighted, rows, moved: differ(before, pixels(canvas)),
                 lensTitle: document.getElementById("lens-title").textContent };

  // what the page loaded: nothing but itself and data: URIs
  probe.resources = performance.getEntriesByType("resource").map((r) => r.name).filter((n) => !n.startsWith("data:"));
  probe.images = Array.from(document.images).map((img) => img.complete && img.naturalWidth > 0);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(probe);
  document.body.appendChild(out);
}, 0));
</script>
"""


def find_browser() -> str | None:
    """A Chromium binary: $CHROMIUM, else the first of BROWSERS on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def probe_page(browser: str, page: str, tmp_path) -> tuple[dict, str]:
    """Load the page with the probe at PAGE_WIDTH px: (the probe's findings, chromium's stderr)."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={PAGE_WIDTH},1000", "--virtual-time-budget=5000",
        "--dump-dom", probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probe did not run; chromium exit {done.returncode}, stderr:\n{done.stderr[-3000:]}"
    return json.loads(html.unescape(match.group(1))), done.stderr


@pytest.mark.subprocess
def test_report_works_in_headless_chromium_at_1400_px(tiny_checkpoint, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium binary found (Debian: apt-get install chromium; or set $CHROMIUM)")
    report = tmp_path / "report.html"
    text = "To kill two birds with one stone. The cat sat on the mat, and the dog ate the bone."
    # twelve words a layer make the lens table far wider than a page: it must scroll inside its box
    assert main(["report", text, "--weights", str(tiny_checkpoint), "-o", str(report), "--top-k", "12"]) == 0
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)  # nothing to fetch, by construction
    probe, stderr = probe_page(browser, page, tmp_path)
    assert probe["errors"] == [] and "Uncaught" not in stderr
    assert probe["page"]["width"] <= PAGE_WIDTH and probe["page"]["scrollWidth"] <= probe["page"]["width"]
    assert probe["tooWide"] == []
    canvas = probe["canvas"]
    assert canvas["width"] > 100 and canvas["height"] > 100
    assert canvas["painted"] > 2000 and canvas["colours"] > 10  # points of several layers, paths, labels
    assert probe["tooltip"]["shown"] and "predicted word" in probe["tooltip"]["text"]
    assert probe["gridCells"] == 2 * 4  # every head of the tiny model: 2 layers × 4 heads
    head = probe["head"]
    assert (head["layer"], head["head"]) == ("1", "2") and head["chosen"] and head["selects"] == ["1", "2"]
    assert head["changed"] > 100 and head["title"].startswith("layer 1, head 2")
    word = probe["word"]
    assert word["highlighted"] == [word["other"]] and word["rows"] == [word["other"]]
    assert word["moved"] > 500  # the red path and its words moved in the 3-D view
    assert f"(position {word['other']})" in word["lensTitle"]
    assert probe["resources"] == []  # no request left the file
    assert probe["images"] and all(probe["images"])
