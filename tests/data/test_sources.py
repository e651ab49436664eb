"""Training sources (hbt.data.sources) and what `hbt data prepare` makes of them."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hbt.config import load_config
from hbt.data.positives import number_records
from hbt.data.prepare import load_manifest, prepare
from hbt.data.sources import mix, read_source, read_training_pool
from hbt.errors import ConfigError, DataError


def write_pairs(path: Path, records: dict[str, dict[str, tuple[str, str]]]) -> Path:
    """{pid: {lang: (question, positive)}} -> a pairs JSONL file."""
    lines = [json.dumps({"parallel_id": pid, "lang": lang, "question": q, "positive": p})
             for pid, by_lang in records.items() for lang, (q, p) in by_lang.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def data_config(data_dir, *sets):
    return load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de]", *sets]).data


@pytest.fixture
def own_pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "own.jsonl", {
        f"{i}": {"en": (f"question {i}?", f"passage {i}."), "de": (f"Frage {i}?", f"Passage {i}.")} for i in range(6)})


def test_pairs_source_is_prefixed_and_filtered_to_training_languages(own_pairs, data_dir, tmp_path):
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {own_pairs}}}]", "data.languages=[en]")
    table = read_source(data.sources[0], data, ())
    assert set(table.column("parallel_id").to_pylist()) == {f"own:{i}" for i in range(6)}
    assert set(table.column("lang").to_pylist()) == {"en"} and set(table.column("source").to_pylist()) == {"own"}


def test_weights_resize_each_source_to_its_share(own_pairs, tmp_path, data_dir):
    other = write_pairs(tmp_path / "other.jsonl", {f"o{i}": {"en": (f"q{i}", f"p{i}")} for i in range(2)})
    sources = f"data.sources=[{{kind: pairs, path: {own_pairs}, weight: 1}}, {{kind: pairs, path: {other}, weight: 3}}]"
    data = data_config(data_dir, sources)
    pool, counts = read_training_pool(data, ())
    # 8 records in all: own gets 1/4 (2 of its 6, a seeded subset), other 3/4 (6: its 2 records 3 times).
    assert counts == {"own": {"records_read": 6, "records_in_pool": 2, "rows_in_pool": 4},
                      "other": {"records_read": 2, "records_in_pool": 6, "rows_in_pool": 6}}
    pool = number_records(pool)
    keys = dict(zip(pool.column("parallel_id").to_pylist(), pool.column("positive_key").to_pylist()))
    assert keys["other:o0#2"] == keys["other:o0#3"] == keys["other:o0"]  # copies never meet in a batch
    unweighted, counts = read_training_pool(data_config(data_dir, sources.replace(", weight: 1", "").replace(
        ", weight: 3", "")), ())
    assert counts["own"]["records_in_pool"] == 6 and counts["other"]["records_in_pool"] == 2


def test_mix_is_seeded(own_pairs, data_dir):
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {own_pairs}}}]")
    table = read_source(data.sources[0], data, ())
    a = mix({"own": table}, {"own": 1.0}, seed=0)
    assert a.equals(mix({"own": table}, {"own": 1.0}, seed=0))


def test_tatoeba_source_pairs_each_sentence_with_its_translation(data_dir):
    data = data_config(data_dir, "data.sources=[{kind: tatoeba}]")
    table = read_source(data.sources[0], data, ())
    rows = [r for r in table.to_pylist() if r["parallel_id"] == "tatoeba:deu-eng:0"]
    assert sorted(r["lang"] for r in rows) == ["de", "en"]
    assert all(r["question"] == r["positive"] for r in rows)
    assert table.num_rows == 2 * 1000  # LASER's Tatoeba: 1,000 sentences per language pair


@pytest.mark.parametrize("sets, fragment", [
    (["data.sources=[{kind: pairs, path: a.jsonl}, {kind: pairs, path: b/a.jsonl}]"], "name 'a' is used twice"),
    (["data.sources=[{kind: pairs, path: a.jsonl, weight: 1}, {kind: xquad}]"], "every source a weight, or none"),
    (["data.sources=[{kind: web}]"], "data.sources.0"),
    (["data.sources=[]"], "data.sources"),
    (["data.sources=[{kind: xquad, weight: 0}]"], "weight"),
    (["data.dev_fraction=0.5", "data.heldout_fraction=0.5"], "leaves no XQuAD article"),
])
def test_bad_sources_give_one_line(sets, fragment):
    with pytest.raises(ConfigError) as caught:
        load_config(None, sets)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_zero_shot_protocol_tests_on_every_article_but_dev(own_pairs, data_dir, tmp_path):
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {own_pairs}}}]", "data.eval_languages=[en,de]")
    manifest = load_manifest(prepare(data, tmp_path / "prep"))
    split = manifest["split"]
    assert split["protocol"] == "zero-shot" and not split["train_articles"]
    assert len(split["test_articles"]) == 43 and len(split["dev_articles"]) == 5
    assert manifest["heldin_question_ids"] == []
    everything = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {own_pairs}}}]",
                             "data.eval_languages=[en]", "data.dev_fraction=0")
    prepared = prepare(everything, tmp_path / "all")
    assert pq.read_table(prepared / "test" / "queries.parquet").num_rows == 1190  # the paper's protocol
    assert not (prepared / "dev").exists()


def test_a_source_holding_an_eval_question_is_refused(data_dir, tmp_path):
    corpus = json.loads((data_dir / "xquad-r" / "en.json").read_text(encoding="utf-8"))
    question = corpus["data"][0]["paragraphs"][0]["qas"][0]["question"]
    leaky = write_pairs(tmp_path / "leaky.jsonl", {"x": {"en": (question, "some passage")},
                                                    "y": {"en": ("another question?", "another passage")}})
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {leaky}}}]", "data.eval_languages=[en]")
    with pytest.raises(DataError, match="test question.* are also training questions"):
        prepare(data, tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


def test_unknown_language_in_a_source_is_refused(tmp_path, data_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"parallel_id": "1", "lang": "english", "question": "q", "positive": "p"}) + "\n")
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {bad}}}]")
    with pytest.raises(DataError, match=r"bad.jsonl: line 1.lang: unknown language code 'english'"):
        read_source(data.sources[0], data, ())


def test_the_documented_mmarco_style_example_reads(tmp_path, data_dir):
    """The worked example of docs/training.md is a valid pairs file: records sharing a passage
    id share a positive key across languages."""
    from hbt.config import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    block = doc.split("<!-- example: mmarco-style pairs")[1].split("```jsonl\n")[1].split("```")[0]
    path = tmp_path / "mmarco_pairs.jsonl"
    path.write_text(block, encoding="utf-8")
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: {path}}}]", "data.languages=[en,de,es]")
    pool, counts = read_training_pool(data, ())
    assert counts["mmarco_pairs"]["records_in_pool"] == 4 and pool.num_rows == 8
    pool = number_records(pool)
    keys = dict(zip(pool.column("parallel_id").to_pylist(), pool.column("positive_key").to_pylist()))
    # Two queries answered by passage 0: one key, in both languages; four records, three keys.
    assert keys["mmarco_pairs:1185869"] == keys["mmarco_pairs:1185870"]
    assert len(set(keys.values())) == 3


def test_prepare_of_a_sharded_source_writes_the_pool_in_shards(tmp_path, data_dir, monkeypatch):
    """A pairs source of JSONL and Parquet shards: the pool is written as several Arrow shards
    (a small ROWS_PER_SHARD), sorted by (record, lang), and the manifest hashes every file read
    and written."""
    from hbt.data import pool as pool_module
    from hbt.data.pool import INDEX_COLUMNS, open_pool

    shards = tmp_path / "own"
    shards.mkdir()
    write_pairs(shards / "part-0.jsonl", {f"{i}": {"en": (f"question {i}?", f"passage {i}.")} for i in range(5)})
    rows = [{"parallel_id": f"{i}", "lang": "de", "question": f"Frage {i}?", "positive": f"Passage {i}."}
            for i in range(3, 9)]
    pq.write_table(pa.Table.from_pylist(rows), shards / "part-1.parquet")
    monkeypatch.setattr(pool_module, "ROWS_PER_SHARD", 4)
    data = data_config(data_dir, f"data.sources=[{{kind: pairs, path: '{shards}/part-*'}}]", "data.eval_languages=[en]")
    manifest = load_manifest(prepare(data, tmp_path / "prep"))

    assert [s["name"] for s in manifest["sources"]] == ["own"]
    assert set(manifest["sources"][0]["files"]) == {str(shards / "part-0.jsonl"), str(shards / "part-1.parquet")}
    pool_files = sorted(name for name in manifest["files"] if name.startswith("train_pairs/"))
    assert pool_files == [f"train_pairs/part-0000{i}.arrow" for i in range(3)]  # 11 rows, 4 a shard
    pool = open_pool(tmp_path / "prep")
    pairs = list(zip(pool.column("parallel_id").to_pylist(), pool.column("lang").to_pylist()))
    assert pairs == sorted(pairs) and len(pairs) == 11
    index = open_pool(tmp_path / "prep", INDEX_COLUMNS)
    assert index.column("record").to_pylist() == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8]
    assert manifest["counts"]["train_parallel_ids"] == 9 and manifest["counts"]["train_pairs"] == {"de": 6, "en": 5}
