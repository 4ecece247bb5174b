"""Paths the tests read, independent of where a test module sits."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
CONFIG = REPO / "config"  # the shipped example configuration and unit files
INVALID_CONFIGS = TESTS / "configs" / "invalid"  # one refused config per file, first line "# expect: key, ..."
JS_DIR = TESTS / "js"  # the AWS SDK for JavaScript test client
