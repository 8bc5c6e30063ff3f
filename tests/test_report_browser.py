"""The report in a real browser: headless Chromium (Debian's ``chromium``) at a desktop and a phone width.

A check script is appended to a copy of the report, which is shown in a frame of the width under test
(headless Chromium keeps its own window at least 500 px wide); the script posts its findings to the
outer page, and Chromium prints that page's DOM. Skipped, with the reason, where Chromium is absent.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_data import report_data

from autodistill.report import summarize, write_report

CHROMIUM = os.environ.get("AUTODISTILL_CHROMIUM") or next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to render the report in (Debian: "
                                                          "apt-get install chromium; or set AUTODISTILL_CHROMIUM)")

#: Runs in the page once it has loaded: errors, plots, overflow, a click on a sortable header.
CHECK_JS = """
<script>
window.addEventListener('load', function () {
  var out = {errors: window.__errors || [], width: window.innerWidth,
             scroll_width: document.documentElement.scrollWidth};
  out.images = Array.from(document.images).map(function (i) { return i.complete && i.naturalWidth > 0; });
  out.svgs = Array.from(document.querySelectorAll('figure > div > svg')).map(function (s) {
    var r = s.getBoundingClientRect(); return [r.width, r.height]; });
  out.overflowing = Array.from(document.body.querySelectorAll('*')).filter(function (e) {
    if (e.closest('.scroll')) return false;
    return e.getBoundingClientRect().right > window.innerWidth + 1; }).map(function (e) { return e.tagName; });
  out.scroll_boxes = Array.from(document.querySelectorAll('.scroll')).map(function (d) {
    return d.getBoundingClientRect().right <= window.innerWidth + 1; });
  var th = Array.from(document.querySelectorAll('table.sortable th')).find(function (h) {
    return h.textContent === 'MLM acc'; });
  th.click();
  out.sorted = Array.from(th.closest('table').tBodies[0].rows).map(function (r) {
    return r.cells[th.cellIndex].dataset.v; });
  out.summary = document.getElementById('summary').innerText;
  out.summary_top = document.getElementById('summary').getBoundingClientRect().top;
  parent.postMessage(JSON.stringify(out), '*');
});
</script>
"""
ERRORS_JS = ("<script>window.__errors=[];window.addEventListener('error',function(e)"
             "{window.__errors.push(String(e.message))});</script>")


def _render(html_path: Path, width: int, tmp_path: Path) -> dict:
    page = tmp_path / f"checked_{width}.html"
    text = html_path.read_text()
    text = text.replace("<head>", "<head>" + ERRORS_JS, 1).replace("</body>", CHECK_JS + "</body>", 1)
    page.write_text(text)
    outer = tmp_path / f"frame_{width}.html"
    outer.write_text(f"<!doctype html><html><body style='margin:0'><iframe src='{page.name}' width='{width}' "
                     "height='900' style='border:0'></iframe><script>window.addEventListener('message',function(e)"
                     "{var p=document.createElement('pre');p.id='__check';p.textContent=e.data;"
                     "document.body.appendChild(p)});</script></body></html>")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / f'profile{width}'}", f"--window-size={max(width, 500) + 40},1000",
           "--virtual-time-budget=5000", "--dump-dom", outer.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="__check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the check script did not run: rc={res.returncode} {res.stderr[-1500:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


@pytest.mark.parametrize("width", [1400, 390])
def test_the_report_renders_whole_at_desktop_and_phone_width(width: int, tmp_path: Path) -> None:
    data = report_data()
    html_path, _ = write_report(data, tmp_path / "run")
    got = _render(html_path, width, tmp_path)
    assert got["errors"] == []                              # every script ran
    assert all(got["images"])                               # every image loaded (the plots are inline SVG)
    assert len(got["svgs"]) == 4 and all(w > 200 and h > 150 for w, h in got["svgs"]), got["svgs"]
    assert got["width"] == width
    assert got["scroll_width"] <= width and got["overflowing"] == [], got  # nothing wider than the screen
    assert all(got["scroll_boxes"])                         # wide tables scroll inside their box
    vals = [float(v) for v in got["sorted"] if v != "NaN"]
    assert vals == sorted(vals) and len(vals) >= 3          # the header click sorted the column
    pick = summarize(data).recommended[0]
    assert got["summary"].startswith("Summary") and f"Take {pick}" in got["summary"]
    assert got["summary_top"] < 120                         # the answer is on the first screen
