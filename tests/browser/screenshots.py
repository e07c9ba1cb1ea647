"""Refresh the README's screenshots: ``python -m tests.browser.screenshots`` (with the test
environment of `make test`: DATABASE_URL, REDIS_URL, CELERY_BROKER_URL) runs the screenshot test
against the real console and KVM stack and writes the PNGs to docs/screenshots/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    os.environ["SCREENSHOTS_DIR"] = str(ROOT / "docs" / "screenshots")
    sys.exit(pytest.main(["-q", str(ROOT / "tests" / "browser" / "test_screenshots.py")]))
