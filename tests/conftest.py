import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data dir: $HBT_DATA_DIR, else ../shared/data next to the repo.

    Missing data fails the tests that need it: a clone without it must not go green untested."""
    path = Path(os.environ.get("HBT_DATA_DIR", REPO_ROOT / "../shared/data")).resolve()
    if not path.is_dir():
        pytest.fail(f"real data dir {path} not found (set HBT_DATA_DIR)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, sized for a 2-core machine.

    The dashboard stays on: Train V2's cleanup under Tune needs the state API it serves.
    """
    import ray

    ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=128 * 1024**2, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()
