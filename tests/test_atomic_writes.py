"""Nothing already written is lost or half-overwritten: writers killed (SIGKILL) mid-write leave
the previous artefact intact and loadable, and the next writer clears what they left."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hbt.io import atomic_directory, write_text_atomic

pytestmark = pytest.mark.timeout(300)

# Runs `hbt` with the moment of replacing an existing output made to hang, so the test can
# kill the process between "everything staged" and "swapped in".
HANGING_CLI = """
import os, sys, time
import hbt.io as io
ready, target = sys.argv[1], sys.argv[2]
def hang():
    open(ready, "w").close()
    time.sleep(600)
io.exchange = lambda a, b: hang()
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)) == target:
        hang()
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from hbt.cli import main
sys.exit(main(sys.argv[3:]))
"""


def digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def kill_while_swapping(tmp_path: Path, target: Path, argv: list[str]) -> None:
    """Run `hbt ARGV`, SIGKILL it once it has staged its output for `target`, wait for it."""
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", HANGING_CLI, str(ready), target.name, *argv],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the writer never reached its swap"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".hbt-" in p.name)


def test_killed_prepare_keeps_the_previous_prepared_dir(data_dir, tmp_path):
    from hbt.cli import main
    from hbt.data.prepare import load_manifest
    from hbt.eval.heldout import read_eval_corpus

    out = tmp_path / "prepared"
    argv = ["data", "prepare", "--data-dir", str(data_dir), "--out", str(out), "--set", "data.languages=[en]",
            "--set", "data.eval_languages=[en]"]
    assert main(argv) == 0
    before = digest(out)
    kill_while_swapping(tmp_path, out, [*argv, "--set", "data.split_seed=7"])
    assert digest(out) == before
    assert load_manifest(out)["split"]["seed"] == 0
    assert read_eval_corpus(out).corpus.queries.num_rows > 0
    assert leftovers(tmp_path)  # the killed writer's staging dir...
    assert main([*argv, "--set", "data.split_seed=7"]) == 0
    assert load_manifest(out)["split"]["seed"] == 7 and leftovers(tmp_path) == []  # ...cleared by the next


def test_killed_eval_keeps_the_previous_results(corpus_dir, tmp_path):
    from hbt.cli import main
    from hbt.eval.report import load_run
    from hbt.model.tiny import tiny_bert

    model = tiny_bert(tmp_path / "tiny")
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model), "--corpus", str(corpus_dir), "--out", str(out),
            "--set", "model.max_length=32", "--set", "cluster.num_cpus=1"]
    subprocess.run([sys.executable, "-m", "hbt.cli", *argv], check=True, capture_output=True, timeout=240)
    before = digest(out)
    kill_while_swapping(tmp_path, out, [*argv, "--languages", "en,de"])
    assert digest(out) == before
    assert load_run(out).results["languages"] == ["de", "en", "es"]  # the first run: every language
    assert main(["report", str(out), str(out), "--resamples", "10"]) == 0


def test_killed_report_keeps_the_previous_markdown(corpus_dir, tmp_path):
    from hbt.cli import main
    from hbt.eval.run import run_eval
    from hbt.model.tiny import tiny_bert

    model = tiny_bert(tmp_path / "tiny")
    run = tmp_path / "run"
    run_eval(model, corpus_dir, run)
    md = tmp_path / "report.md"
    md.write_text("the previous report\n")
    kill_while_swapping(tmp_path, md, ["report", str(run), str(run), "--resamples", "10", "--out-md", str(md)])
    assert md.read_text() == "the previous report\n"
    assert main(["report", str(run), str(run), "--resamples", "10", "--out-md", str(md)]) == 0
    assert md.read_text().startswith("| run |") and leftovers(tmp_path) == []


def test_atomic_directory_swaps_whole_and_clears_a_dead_writers_staging(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as staging:
        (staging / "a").write_text("1")
    stale = tmp_path / ".out.hbt-999999999-x"  # a pid that cannot be alive
    stale.mkdir()
    with atomic_directory(final) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert not stale.exists()
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as staging:
            (staging / "c").write_text("3")
            raise RuntimeError("writer failed")
    assert sorted(p.name for p in final.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_swap_cut_between_two_renames_is_undone(tmp_path, monkeypatch):
    """Where the one-call exchange is missing, the old dir is parked first: a crash right after
    leaves it parked, and the next writer puts it back before doing anything else."""
    import hbt.io as io

    final = tmp_path / "out"
    with atomic_directory(final) as staging:
        (staging / "a").write_text("old")
    os.replace(final, io._parked(final))  # the first rename happened, then the crash
    assert not final.exists()
    monkeypatch.setattr(io, "exchange", lambda a, b: False)
    with pytest.raises(RuntimeError):
        with atomic_directory(final):
            assert (final / "a").read_text() == "old"  # restored before the new one is staged
            raise RuntimeError("stop here")
    assert (final / "a").read_text() == "old"
    with atomic_directory(final) as staging:
        (staging / "a").write_text("new")
    assert (final / "a").read_text() == "new" and not io._parked(final).exists()


def test_write_text_atomic_leaves_no_temp_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_atomic_outputs_get_the_modes_of_ordinary_files_and_dirs(tmp_path):
    """Staged through mkstemp / mkdtemp (0600 / 0700), outputs still end with the umask's modes."""
    import os
    import stat

    from hbt.io import atomic_directory, write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.md", "x\n")
        with atomic_directory(tmp_path / "eval") as staging:
            (staging / "results.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "eval").stat().st_mode) == 0o755
