"""The UI's unit tests import `tests.ui_fixtures` (shared with the benchmarks): make the
repository root importable when these files run on their own."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[3])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
