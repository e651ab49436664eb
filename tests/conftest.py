import faulthandler
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_STATUS = pytest.StashKey[int]()
TEARDOWN_LOG = pytest.StashKey[object]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[EXIT_STATUS] = int(exitstatus)


# The forked teardown gets this long. Once Ray's core worker has run, the copy's native
# destructors can wait forever for threads fork did not copy (seen: no Python stack, so past
# Py_Finalize): a copy still running then is ended without a word, as it says nothing about the
# real teardown. A crash comes in well under a second.
TEARDOWN_WAIT_S = 5


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process once pytest has reported and every fixture is torn down, with pytest's
    exit status, skipping the interpreter's own teardown; but run that teardown in a forked
    copy, so a crash in it is reported (what and where), not hidden.

    A session loads torch, faiss, Ray's core worker, gRPC and DeepSpeed, whose native teardown
    runs at interpreter exit; once in CI it crashed (SIGSEGV) after a green run had
    printed "645 passed", and reruns of the same suite exited 0. Tests are what this process
    is for and their results are written by now, so such a crash must not turn CI red; the
    copy's faulthandler stack is printed only if it crashed. The copy has only this
    thread (fork copies no other), so its teardown is close to, not the same as, the real one."""
    if EXIT_STATUS not in config.stash:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    status = config.stash[EXIT_STATUS]
    with tempfile.TemporaryFile() as said:
        child = os.fork()
        if child == 0:  # the copy: let the interpreter tear down as it would have
            # A file of its own: pytest's cleanups still to run restore fd 2 and close `said`.
            config.stash[TEARDOWN_LOG] = os.fdopen(os.dup(said.fileno()), "w")
            faulthandler.enable(file=config.stash[TEARDOWN_LOG], all_threads=True)
            return
        _report_teardown(child, said)
    os._exit(status)


def _report_teardown(child: int, said) -> None:
    """Wait for the forked teardown; if it died by a signal, say so with its stack."""
    deadline = time.monotonic() + TEARDOWN_WAIT_S
    while (done := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return
    if not os.WIFSIGNALED(done[1]):
        return
    said.seek(0)
    where = said.read().decode("utf-8", "replace").strip() or "(no Python stack: it crashed in native code)"
    print(f"conftest: the interpreter's teardown after the tests crashed "
          f"({signal.Signals(os.WTERMSIG(done[1])).name}); the exit status stays pytest's. Where:\n{where}",
          file=sys.stderr, flush=True)


@pytest.fixture(scope="session", autouse=True)
def hbt_cache_dir(tmp_path_factory) -> Path:
    """The int8 model cache in the session's temp dir, not the home dir (set before any Ray
    starts, so its workers inherit it)."""
    path = tmp_path_factory.mktemp("hbt-cache")
    os.environ["HBT_CACHE_DIR"] = str(path)
    return path


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

    from hbt.ray_session import PREEMPTION_WATCHER_ENV

    ray.shutdown()
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")  # as hbt's own local Ray (hbt.ray_session)
    ray.init(address="local", num_cpus=2, object_store_memory=128 * 1024**2, include_dashboard=True,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def corpus_dir(tmp_path):
    """A synthetic LAReQA corpus whose relevance structure is known exactly (see synthetic.py)."""
    from synthetic import write_corpus

    return write_corpus(tmp_path / "xquad-r")


# Shared by the training and tuning tests: 16 real records in 3 languages and a tiny BERT that
# covers them. A global batch of 8 pairs sees each record every other step, so within ~20
# steps a working loop memorises them and the loss falls far below chance (ln 8 = 2.08 with 8
# in-batch candidates).
@pytest.fixture(scope="session")
def prepared(tmp_path_factory, data_dir) -> Path:
    from hbt.config import load_config
    from hbt.data.prepare import prepare

    out = tmp_path_factory.mktemp("train") / "prep"
    cfg = load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de,es]", "data.max_train_records=16"])
    return Path(prepare(cfg.data, out))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, prepared) -> Path:
    """A tiny random BERT whose word-level vocabulary covers the training text (so few [UNK])."""
    from hbt.data.pool import open_pool
    from hbt.model.tiny import tiny_bert

    table = open_pool(prepared, ["question", "positive", "hard_negatives"])
    texts = table.column("question").to_pylist() + table.column("positive").to_pylist()
    texts += [text for negatives in table.column("hard_negatives").to_pylist() for text in negatives or ()]
    words = {word for text in texts for word in re.findall(r"\w+", text.lower())}
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", sorted(words) + ["query", "passage", ":"])


