"""scripts/mmarco_to_pairs.py on a tiny mMARCO layout: records hbt reads, translations sharing
their ids, a query with two positives as two records, bad input as one line and exit 2."""

import subprocess
import sys
from pathlib import Path

from hbt.data.pairs import read_pairs

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mmarco_to_pairs.py"


def fake_mmarco(root: Path) -> Path:
    passages = {"english": ["the cat sat", "a dog ran", "birds fly", "fish swim"],
                "german": ["die Katze sass", "ein Hund lief", "Voegel fliegen", "Fische schwimmen"]}
    queries = {"english": ["where did the cat sit", "what runs"], "german": ["wo sass die Katze", "was laeuft"]}
    for language in passages:
        (root / "google/collections").mkdir(parents=True, exist_ok=True)
        (root / "google/queries/train").mkdir(parents=True, exist_ok=True)
        (root / f"google/collections/{language}_collection.tsv").write_text(
            "".join(f"{pid}\t{text}\n" for pid, text in enumerate(passages[language])))
        (root / f"google/queries/train/{language}_queries.train.tsv").write_text(
            "".join(f"{100 + i}\t{text}\n" for i, text in enumerate(queries[language])))
    # query 100: positive 0, negatives 2 and 3; query 101: positives 1 and 0 (two records).
    (root / "triples.train.ids.small.tsv").write_text("100\t0\t2\n100\t0\t3\n101\t1\t3\n101\t0\t2\n")
    return root


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_converts_to_pairs_hbt_reads(tmp_path):
    root = fake_mmarco(tmp_path / "mmarco")
    done = run("--root", root, "--languages", "en,de", "--out", tmp_path / "pairs", "--negatives", "1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["de-00000.parquet", "en-00000.parquet"]
    rows = {(r["parallel_id"], r["lang"]): r for r in read_pairs(str(tmp_path / "pairs")).to_pylist()}
    assert sorted(rows) == [("100:0", "de"), ("100:0", "en"), ("101:0", "de"), ("101:0", "en"),
                            ("101:1", "de"), ("101:1", "en")]
    assert rows[("100:0", "de")]["question"] == "wo sass die Katze"
    assert rows[("100:0", "de")]["positive"] == "die Katze sass"
    assert rows[("100:0", "de")]["hard_negatives"] == ["Voegel fliegen"]  # the first triple's, --negatives 1
    # Both records answered by passage 0 name it: hbt keeps them out of one batch.
    assert rows[("100:0", "en")]["positive_id"] == rows[("101:0", "en")]["positive_id"] == "0"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    root = fake_mmarco(tmp_path / "mmarco")
    unknown = run("--root", root, "--languages", "xx", "--out", tmp_path / "pairs")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "not an mMARCO language" in unknown.stderr
    missing = run("--root", tmp_path / "nowhere", "--languages", "en", "--out", tmp_path / "pairs")
    assert missing.returncode == 2 and "file not found" in missing.stderr and missing.stderr.count("\n") == 1
