"""`hbt data prepare --ray` (hbt.data.distributed): Ray tasks over the sources' shards write the
in-process path's pool byte for byte, link positives across shards, and fail as it does."""

import json
from pathlib import Path

import numpy as np
from test_positives import reference_keys

from hbt.cli import main
from hbt.config import load_config
from hbt.data import pool as pool_files
from hbt.data.pool import open_pool
from hbt.data.prepare import prepare

LANGS = ["en", "de", "es"]


def generated_rows(records: int, seed: int) -> list[dict]:
    """Records in 1-3 languages whose positives come from few texts (so records share them within
    and across languages), some with a positive_id, hard negatives often another record's positive."""
    rng = np.random.default_rng(seed)
    texts = [f"passage {i}" for i in range(records // 3)]
    rows = []
    for record in range(records):
        for lang in rng.choice(LANGS, size=rng.integers(1, 4), replace=False):
            positive_id = f"doc-{rng.integers(8)}" if rng.random() < 0.2 else None
            rows.append({"parallel_id": f"r{record}", "lang": str(lang), "question": f"question {record} {lang}?",
                         "positive": str(rng.choice(texts)), "positive_id": positive_id,
                         "hard_negatives": [str(t) for t in rng.choice(texts + ["nobody's"], size=rng.integers(3))]})
    return rows


def write_by_language(rows: list[dict], directory: Path) -> Path:
    """One JSONL shard per language, as mMARCO's conversion writes them: a record's rows are in
    every shard, so linking its positives crosses shards."""
    directory.mkdir()
    for lang in LANGS:
        lines = [json.dumps(row) for row in rows if row["lang"] == lang]
        (directory / f"part-{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def pairs_config(data_dir, *sources: Path, sets=()):
    listed = ", ".join(f"{{kind: pairs, path: {path}, name: {path.name}"
                       + (f", weight: {weight}}}" if len(sources) > 1 else "}")
                       for path, weight in zip(sources, (1, 3)))
    return load_config(None, [f"data.data_dir={data_dir}", f"data.languages={LANGS}", "data.eval_languages=[en]",
                              f"data.sources=[{listed}]", *sets]).data


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_ray_tasks_write_the_in_process_pool_byte_for_byte(ray_local, data_dir, tmp_path, monkeypatch):
    """Two sources mixed by weight (copies of records), rows dropped by language and by record, and
    output shards of 40 rows, so rows of every input shard land in every output shard."""
    monkeypatch.setattr(pool_files, "ROWS_PER_SHARD", 40)
    first = write_by_language(generated_rows(60, seed=1), tmp_path / "first")
    second = write_by_language(generated_rows(20, seed=2), tmp_path / "second")
    data = pairs_config(data_dir, first, second, sets=["data.imbalance={de: 0.5}", "data.max_train_records=150"])
    in_process, on_ray = prepare(data, tmp_path / "local"), prepare(data, tmp_path / "ray", on_ray=True)
    written = files(on_ray)
    assert len([name for name in written if name.startswith("train_pairs/")]) > 3
    assert "_work" not in " ".join(written)
    assert written == files(in_process)


def test_keys_link_records_across_shards_as_the_union_find(ray_local, data_dir, tmp_path):
    rows = generated_rows(90, seed=3)
    pool = open_pool(prepare(pairs_config(data_dir, write_by_language(rows, tmp_path / "syn")), tmp_path / "out",
                             on_ray=True))
    keys, negative_keys = reference_keys([{**row, "parallel_id": f"syn:{row['parallel_id']}", "source": "syn"}
                                          for row in rows])
    assert len(set(keys.values())) < len(keys) / 2  # most records share a passage with another
    record = {pid: i for i, pid in enumerate(sorted(keys))}
    expected = sorted(((record[f"syn:{row['parallel_id']}"], row["lang"]), keys[f"syn:{row['parallel_id']}"],
                       [-1 if k is None else record[k] for k in negatives])
                      for row, negatives in zip(rows, negative_keys))
    got = list(zip(zip(pool.column("record").to_pylist(), pool.column("lang").to_pylist()),
                   pool.column("positive_key").to_pylist(), pool.column("negative_keys").to_pylist()))
    assert got == expected


def test_a_malformed_row_deep_in_shard_2_is_one_line_and_nothing_is_written(ray_local, data_dir, tmp_path, capsys):
    source = write_by_language(generated_rows(40, seed=4), tmp_path / "syn")
    shard = source / "part-en.jsonl"  # the second shard in path order (de, en, es)
    lines = shard.read_text().splitlines()
    lines[-3] = lines[-3].replace('"lang": "en"', '"lang": 7')
    shard.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # what an earlier run left
    config = tmp_path / "config.yaml"
    config.write_text(f"data: {{data_dir: {data_dir}, languages: {LANGS}, eval_languages: [en], "
                      f"sources: [{{kind: pairs, path: {source}, name: syn}}]}}\n")
    code = main(["data", "prepare", "--ray", "--config", str(config), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"hbt: error: {shard}: line {len(lines) - 2}.lang: expected str, got int"
    assert files(out) == {"manifest.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "prepared", "syn"]  # no staging left


def test_xquad_and_tatoeba_are_read_whole_by_one_task_each(ray_local, data_dir, tmp_path):
    data = load_config(None, [f"data.data_dir={data_dir}", "data.languages=[en,de]", "data.eval_languages=[en,de]",
                              "data.sources=[{kind: xquad}, {kind: tatoeba}]", "data.max_train_records=60"]).data
    assert files(prepare(data, tmp_path / "ray", on_ray=True)) == files(prepare(data, tmp_path / "local"))
