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

# One row per (parallel record, language) of training data.
TRAIN_PAIR_SCHEMA = pa.schema([
    ("parallel_id", pa.string()),   # shared by the translations of one record
    ("lang", pa.string()),
    ("article", pa.int32()),
    ("question", pa.string()),
    ("positive", pa.string()),      # the answer sentence
    ("context", pa.string()),       # its paragraph
    ("hard_negatives", pa.list_(pa.string())),  # the paragraph's other sentences
])

# One row per (parallel sentence, language) of a bitext.
BITEXT_SCHEMA = pa.schema([
    ("parallel_id", pa.string()),
    ("lang", pa.string()),
    ("text", pa.string()),
])
