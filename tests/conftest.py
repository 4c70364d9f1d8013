"""Shared test set-up: the project root on sys.path, so tests import the flat modules."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils  # noqa: E402,F401  (CPU env defaults before any test imports paddle)
