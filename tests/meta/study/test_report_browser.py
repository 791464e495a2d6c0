"""report.html in a real browser: headless Chromium takes a screenshot of a fake reproduction's
report (skipped where no Chromium binary is found; CI installs Debian's ``chromium``, .ci/run).

To look at a real report the same way::

    chromium --headless --no-sandbox --hide-scrollbars --window-size=1280,9000 \\
        --screenshot=/tmp/report.png file:///path/to/DIR/report.html
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_reproduction import FakeSpec, write_fake_reproduction
from matplotlib.image import imread

from meta.study.report import write_paper_outputs

CHROMIUM = next(
    (
        path
        for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))
        if path
    ),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian: apt-get install chromium)")
WIDTH, HEIGHT = 1280, 5000


def screenshot(page: Path, png: Path, profile: Path, *, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """``page`` rendered by headless Chromium in a ``width`` x ``height`` window, as an RGB(A) array."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=5000",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return imread(png)


def test_the_report_renders_in_chromium(tmp_path):
    out = write_fake_reproduction(tmp_path / "reproduction", (FakeSpec(n_seeds=1),))
    image = screenshot(write_paper_outputs(out), tmp_path / "report.png", tmp_path / "profile")
    assert image.shape[:2] == (HEIGHT, WIDTH)
    rgb = image[..., :3]
    assert rgb[:300].std() > 0.05  # the title and the opening paragraph are drawn
    assert (rgb.min(axis=2) < 0.5).mean() > 0.01  # text, tables and figures: a page, not a blank
    margin = rgb[:, -40:]
    assert margin.min() > 0.95, "something is wider than the page (a table or figure overflows on the right)"
