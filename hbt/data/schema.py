"""The canonical Arrow schemas every reader produces and every later stage consumes."""

import pyarrow as pa

# One row per (question, language) of a retrieval corpus (LAReQA format).
QUERY_SCHEMA = pa.schema([
    ("id", pa.string()),        # question id, shared by the question's translations
    ("lang", pa.string()),
    ("text", pa.string()),
    ("article", pa.int32()),    # article index in the file (same order in every language)
])

# One row per candidate sentence of a retrieval corpus.
CANDIDATE_SCHEMA = pa.schema([
    ("id", pa.string()),        # "{lang}:{article}:{paragraph}:{sentence}"
    ("lang", pa.string()),
    ("sentence", pa.string()),
    ("context", pa.string()),   # the sentence's paragraph
    ("article", pa.int32()),
])

# Which candidate answers a question in one language; relevance is shared across
# languages through `query_id`, so a question has one relevant row per language.
QREL_SCHEMA = pa.schema([
    ("query_id", pa.string()),
    ("lang", pa.string()),
    ("candidate_id", pa.string()),
])

# One row per (parallel record, language) of training data, as a reader gives it.
RAW_PAIR_SCHEMA = pa.schema([
    ("parallel_id", pa.string()),   # shared by the translations of one record
    ("lang", pa.string()),
    ("article", pa.int32()),        # XQuAD article index; -1 for other sources
    ("question", pa.string()),
    ("positive", pa.string()),      # the answer sentence / passage
    ("context", pa.string()),       # its paragraph ("" when there is none)
    ("hard_negatives", pa.list_(pa.string())),  # e.g. the paragraph's other sentences
    ("positive_id", pa.string()),   # optional: the positive passage's id, shared by its translations
])

# One row per (parallel record, language) of the prepared training pool (`hbt data prepare`,
# stored as `hbt.data.pool` shards, sorted by (record, lang)): the raw columns with the parallel
# id prefixed by its source, plus the positive keys (hbt.data.positives) that keep false
# negatives out of a batch, as text and as record numbers for tensors.
TRAIN_PAIR_SCHEMA = pa.schema([
    ("record", pa.int32()),         # rank of parallel_id among the pool's distinct ids (0-based)
    ("parallel_id", pa.string()),   # "{source}:{id}", shared by the translations of one record
    ("lang", pa.string()),
    ("source", pa.string()),        # the `data.sources` entry the record comes from
    ("article", pa.int32()),
    ("question", pa.string()),
    ("positive", pa.string()),
    ("context", pa.string()),
    ("hard_negatives", pa.list_(pa.string())),
    ("positive_key", pa.string()),  # shared by every record whose positive is the same passage
                                    # (in any language): never two in one global step
    ("key", pa.int32()),            # the record number of positive_key (its component's smallest id)
    ("negative_keys", pa.list_(pa.int32())),  # per hard negative: the `key` of the records it is
                                              # the positive of, -1 if none
])

# One row per (parallel sentence, language) of a bitext.
BITEXT_SCHEMA = pa.schema([
    ("parallel_id", pa.string()),
    ("lang", pa.string()),
    ("text", pa.string()),
])
