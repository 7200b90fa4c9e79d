"""The HTML report in a real headless browser: it renders, its images decode, it asks for nothing outside
itself, and it fits a phone's width. Skipped where no Chromium is installed (CI installs none)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

BROWSER = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (Debian: apt-get install chromium)")

# Injected first in <head>: a policy that lets the page load only what it carries (data: images, its
# inline style), and a listener that records every load the policy blocked, i.e. every outside request.
GUARD = """<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:;
style-src 'unsafe-inline'; script-src 'unsafe-inline'"><script>window.blocked = [];
document.addEventListener('securitypolicyviolation', e => window.blocked.push(e.blockedURI || e.violatedDirective));
</script>"""
# Injected last in <body>: what the browser made of the page, once it has loaded.
PROBE = """<script>addEventListener('load', () => { const images = [...document.images];
document.body.setAttribute('data-probe', JSON.stringify({images: images.length,
 decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
 widest: Math.max(0, ...images.map(i => i.getBoundingClientRect().right)), innerWidth: innerWidth,
 scrollWidth: document.documentElement.scrollWidth, height: document.body.scrollHeight,
 tables: document.querySelectorAll('table').length, blocked: window.blocked,
 viewport: (document.querySelector('meta[name=viewport]') || {}).content || null,
 resources: performance.getEntriesByType('resource').map(e => e.name)})); });</script>"""


def open_in_browser(page_html: str, folder, width: int = 400) -> dict:
    """Load `page_html` (with GUARD and PROBE added) in headless Chromium; return the probe's findings."""
    page = folder / "probe.html"
    page.write_text(page_html.replace("<head>", "<head>" + GUARD, 1).replace("</body>", PROBE + "</body>", 1),
                    encoding="utf-8")
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={folder / 'profile'}",
               f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert found, f"the page never finished loading: {proc.stdout[:500]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report with tables, the privacy-utility plot and an image grid, from one blurred synthetic set."""
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.data.synth import SynthConfig, synthesize
    from ppvi_cli.measure import chaos_report, privacy_report
    from ppvi_cli.metrics.features import FeatureSet
    from ppvi_cli.metrics.protocols import evaluate_settings
    from ppvi_cli.report.tables import make_report

    root = tmp_path_factory.mktemp("browser")
    raw = root / "synthvi"
    synthesize(raw, SynthConfig(ids=4, images_per_camera=1, height=64, width=32, seed=0))
    anonymize_dataset(build_method("blur"), raw, root / "blur", fmt="sysu", seed=0)
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=(12, 8)).astype(np.float32)
    qp, gp = np.resize([1, 2, 3], 6), np.resize([1, 2, 3], 12)
    feats = FeatureSet("mem", {"raw": q, "anon": q + 0.3}, {"raw": g, "anon": g + 0.3}, qp, np.zeros(6, int), gp,
                       np.ones(12, int))
    run = root / "runs" / "blur"
    run.mkdir(parents=True)
    run.joinpath("eval.json").write_text(json.dumps(evaluate_settings(feats, "market", ["raw2raw", "anon2anon"],
                                                                      backend="torch")))
    run.joinpath("privacy.json").write_text(json.dumps(privacy_report(raw, root / "blur", "sysu")))
    run.joinpath("chaos.json").write_text(json.dumps(chaos_report(root / "blur", "sysu")))
    doc = make_report([run], root / "report")
    return (root / "report" / doc["html"]).read_text(encoding="utf-8")


def test_report_renders_with_its_images_and_nothing_from_outside(report, tmp_path):
    seen = open_in_browser(report, tmp_path)
    assert seen["images"] == 2 and seen["decoded"] == 2  # the plot and the grid, decoded by the browser
    assert seen["tables"] >= 1 and seen["height"] > 300
    assert seen["blocked"] == [] and seen["resources"] == []  # no request beyond the file itself
    assert seen["viewport"] == "width=device-width, initial-scale=1"
    assert seen["widest"] <= seen["innerWidth"] and seen["scrollWidth"] <= seen["innerWidth"]  # fits a phone


def test_the_browser_check_catches_an_outside_request(report, tmp_path):
    """The same check on the page with one external image: the browser reports it (so the check can fail)."""
    tainted = report.replace("</h1>", '</h1><img src="http://example.invalid/pixel.png" alt="">', 1)
    seen = open_in_browser(tainted, tmp_path)
    assert seen["blocked"] == ["http://example.invalid/pixel.png"] and seen["decoded"] == 2
