"""The on-disk layout: the names of the files and dirs hbt writes and reads back.

prepared dir (`hbt data prepare --out`):
    manifest.json, train_pairs/ (the pool's Arrow shards), {dev,test}/{queries,candidates,qrels}.parquet
model dir (a trained model, `RUN_DIR/model`): the encoder's files + hbt_training.json (the
    prepared manifest, copied, with the train config and the exported checkpoint)
run dir (`hbt train --out`): config.yaml, metrics.jsonl, model/; each checkpoint holds model/
    and composer.json; Ray Train keeps checkpoint_manager_snapshot.json at the run's storage
eval dir (`hbt eval --out`): results.json, per_query.parquet, summary.md (+ pairs.csv and
    heatmap.png for a LAReQA corpus)
"""

# prepared dir
MANIFEST = "manifest.json"
TRAIN_POOL = "train_pairs"
EVAL_TABLES = ("queries", "candidates", "qrels")  # each a Parquet file under dev/ and test/

# model dir
TRAINING_MANIFEST = "hbt_training.json"

# run dir and its checkpoints
RUN_CONFIG = "config.yaml"
METRICS_LOG = "metrics.jsonl"
MODEL_DIR = "model"
COMPOSER_STATE = "composer.json"
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"

# eval dir
RESULTS = "results.json"
PER_QUERY = "per_query.parquet"
SUMMARY = "summary.md"
PAIRS_CSV = "pairs.csv"
HEATMAP = "heatmap.png"
