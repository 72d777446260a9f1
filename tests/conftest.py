import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Small, fast synthetic setting for CLI tests: 3 classes, 16x16 images, one epoch.
TINY = [
    "data=synthetic", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=96",
    "data.synthetic.test_per_class=32", "data.synthetic.image_size=16", "data.imbalance=4",
    "trainer.epochs=1", "trainer.batch_size=32", "trainer.progress=false", "trainer.device=cpu",
]


@pytest.fixture(scope="session")
def data_root() -> str:
    root = os.environ.get("IMBALANCE_LAB_DATA")
    assert root, "set IMBALANCE_LAB_DATA to the offline dataset mirror (e.g. ../shared/data)"
    return root


def run_cli(*overrides: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m imbalance_lab`` as a user would, in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "imbalance_lab", *overrides], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
