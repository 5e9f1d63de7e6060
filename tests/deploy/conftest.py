"""tests/deploy: starting and stopping engines, `autellix serve`, Ray. FakeEngine and the served-gateway
helpers are shared with tests/gateway."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))
