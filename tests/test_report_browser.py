"""The HTML report in a real browser: headless Chromium loads it with no errors and its 3-D view draws.

A probe script is put at the top of a copy of the page: it records every error and console.error, then,
after the page has loaded, counts the canvas's painted pixels, hovers the predicted word's star, drags
the view and checks that the picture changed; it writes its findings as JSON into the DOM, which
`chromium --dump-dom` prints. Skipped only when no Chromium binary is installed (Debian: `chromium`)."""

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

PROBE = """<script>
window.__probe = { errors: [] };
window.addEventListener("error", (e) => window.__probe.errors.push("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => window.__probe.errors.push("rejection: " + e.reason));
const consoleError = console.error;
console.error = (...args) => { window.__probe.errors.push("console.error: " + args.join(" ")); consoleError(...args); };
window.addEventListener("load", () => setTimeout(() => {
  const probe = window.__probe, canvas = document.getElementById("trajectory-canvas");
  const pixels = () => canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const box = canvas.getBoundingClientRect(), ratio = canvas.width / box.width;
  let before = pixels(), painted = 0, star = null;
  const colours = new Set();
  for (let i = 0; i < before.length; i += 4) {
    const rgb = [before[i], before[i + 1], before[i + 2]];
    if (rgb.join() !== "251,251,253") { painted++; colours.add(rgb.join()); }
    if (!star && rgb.join() === "255,165,0") star = (i / 4);  // the orange star of the predicted word
  }
  probe.canvas = { width: canvas.width, height: canvas.height, painted, colours: colours.size };
  if (star !== null) {
    const x = box.left + (star % canvas.width) / ratio + 1, y = box.top + Math.floor(star / canvas.width) / ratio + 1;
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: x, clientY: y, bubbles: true }));
    const tip = document.getElementById("trajectory-tip");
    probe.tooltip = { shown: tip.style.display === "block", text: tip.textContent };
  }
  before = pixels();
  const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
  canvas.dispatchEvent(new PointerEvent("pointerdown", { clientX: cx, clientY: cy, bubbles: true }));
  window.dispatchEvent(new PointerEvent("pointermove", { clientX: cx + 80, clientY: cy + 30, bubbles: true }));
  window.dispatchEvent(new PointerEvent("pointerup", { clientX: cx + 80, clientY: cy + 30, bubbles: true }));
  const after = pixels();
  let changed = 0;
  for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) changed++;
  probe.rotated = changed;
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


@pytest.mark.subprocess
def test_report_renders_in_headless_chromium(tiny_checkpoint, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium binary found (Debian: apt-get install chromium; or set $CHROMIUM)")
    report = tmp_path / "report.html"
    text = "To kill two birds with one stone. The cat sat on the mat."
    assert main(["report", text, "--weights", str(tiny_checkpoint), "-o", str(report)]) == 0
    page = report.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1000", "--virtual-time-budget=5000",
        "--dump-dom", probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probe did not run; chromium exit {done.returncode}, stderr:\n{done.stderr[-3000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["errors"] == []
    assert "Uncaught" not in done.stderr
    canvas = probe["canvas"]
    assert canvas["width"] > 100 and canvas["height"] > 100
    assert canvas["painted"] > 2000 and canvas["colours"] > 10  # points of several layers, paths, labels
    assert probe["tooltip"]["shown"] and "predicted word" in probe["tooltip"]["text"]  # hover names the point
    assert probe["rotated"] > 1000  # dragging turned the view
    assert probe["images"] and all(probe["images"])  # every inline PNG decoded
