import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data dir: $HBT_DATA_DIR, else ../shared/data next to the repo."""
    path = Path(os.environ.get("HBT_DATA_DIR", REPO_ROOT / "../shared/data")).resolve()
    if not path.is_dir():
        pytest.skip(f"real data dir {path} not found (set HBT_DATA_DIR)")
    return path
