"""Convert mMARCO's translated MS MARCO training files into hbt `pairs` shards (Parquet).

mMARCO (unicamp-dl/mmarco) translates MS MARCO's passages and queries into 13 languages; the
ids are MS MARCO's, the same in every language. Per language it ships a collection
(`pid \\t passage`) and training queries (`qid \\t query`); the training triples
(`qid \\t positive pid \\t negative pid`, ids only) are shared by all languages. One hbt record
per training query, in every language asked for:

    parallel_id = "qid:pid"      question = the query in that language
    positive_id = positive pid   positive = the passage in that language
    hard_negatives = up to --negatives of the query's triple negatives, in that language

Queries answered by one passage share its `positive_id`, so hbt never puts two of them in a
batch. One language at a time: the peak memory is one language's collection (8.8M passages,
~3 GB of text) plus the query table. The output is one Parquet shard per (language, part) in
OUT, the `path` of a `kind: pairs` source (docs/scale.md).

    python scripts/mmarco_to_pairs.py --root mmarco/data --languages en,de,zh --out pairs/mmarco \\
        --collection 'google/collections/{language}_collection.tsv' \\
        --queries 'google/queries/train/{language}_queries.train.tsv' \\
        --triples triples.train.ids.small.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# mMARCO names its files by language name; hbt takes ISO 639-1 codes.
MMARCO_LANGUAGES = {
    "ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fr": "french", "hi": "hindi",
    "id": "indonesian", "it": "italian", "ja": "japanese", "nl": "dutch", "pt": "portuguese",
    "ru": "russian", "vi": "vietnamese", "zh": "chinese",
}
ROWS_PER_SHARD = 200_000


class ConvertError(Exception):
    """Bad input: printed as one line, exit 2."""


def read_tsv(path: Path, names: list[str], types: dict[str, pa.DataType]) -> pa.Table:
    """A headerless TSV with no quoting (mMARCO's texts hold quotes, never tabs or newlines)."""
    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    return pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names),
                          parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                          convert_options=pacsv.ConvertOptions(column_types=types))


def training_queries(triples: pa.Table, negatives: int) -> pa.Table:
    """qid -> its positive pid and up to `negatives` negative pids (first triples first)."""
    grouped = triples.group_by(["qid", "pos"], use_threads=False).aggregate([("neg", "list")])
    limited = pc.list_slice(grouped.column("neg_list"), 0, negatives)
    return pa.table({"qid": grouped.column("qid"), "pos": grouped.column("pos"), "negs": limited})


def texts_by_id(table: pa.Table, ids: pa.Array) -> pa.Array:
    """The `text` of each id in `ids` (null where the table has none)."""
    where = pc.index_in(ids, value_set=table.column("id"))
    return pc.take(table.column("text").combine_chunks(), where)


def convert_language(code: str, queries: pa.Table, collection: pa.Table, training: pa.Table) -> pa.Table:
    question = texts_by_id(queries, training.column("qid"))
    positive = texts_by_id(collection, training.column("pos"))
    negatives = training.column("negs").combine_chunks()
    negative_texts = texts_by_id(collection, negatives.flatten())
    hard_negatives = pa.ListArray.from_arrays(negatives.offsets, negative_texts)
    table = pa.table({
        # A query with two positive passages is two records.
        "parallel_id": pc.binary_join_element_wise(pc.cast(training.column("qid"), pa.string()),
                                                   pc.cast(training.column("pos"), pa.string()), ":"),
        "lang": pa.array([code] * training.num_rows, pa.string()),
        "question": question, "positive": positive,
        "hard_negatives": hard_negatives,
        "positive_id": pc.cast(training.column("pos"), pa.string()),
    })
    # A query or passage missing from this language's files: leave the record out of it.
    keep = pc.and_(pc.is_valid(table.column("question")), pc.is_valid(table.column("positive")))
    return table.filter(keep)


def convert(root: Path, languages: list[str], out: Path, collection: str, queries: str, triples: str,
            negatives: int) -> dict[str, int]:
    """Write OUT/{lang}-{part:05d}.parquet for every language; -> rows written per language."""
    unknown = [code for code in languages if code not in MMARCO_LANGUAGES]
    if unknown:
        raise ConvertError(f"not an mMARCO language: {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(MMARCO_LANGUAGES))})")
    ids = {"qid": pa.int64(), "pos": pa.int64(), "neg": pa.int64()}
    training = training_queries(read_tsv(root / triples, ["qid", "pos", "neg"], ids), negatives)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for code in languages:
        name = MMARCO_LANGUAGES[code]
        text = {"id": pa.int64(), "text": pa.string()}
        table = convert_language(code, read_tsv(root / queries.format(language=name), ["id", "text"], text),
                                 read_tsv(root / collection.format(language=name), ["id", "text"], text), training)
        for part, start in enumerate(range(0, table.num_rows, ROWS_PER_SHARD)):
            pq.write_table(table.slice(start, ROWS_PER_SHARD), out / f"{code}-{part:05d}.parquet")
        written[code] = table.num_rows
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="the mMARCO data directory")
    p.add_argument("--languages", required=True, help="ISO 639-1 codes, comma-separated (e.g. en,de,zh)")
    p.add_argument("--out", type=Path, required=True, help="directory for the Parquet shards")
    p.add_argument("--collection", default="google/collections/{language}_collection.tsv")
    p.add_argument("--queries", default="google/queries/train/{language}_queries.train.tsv")
    p.add_argument("--triples", default="triples.train.ids.small.tsv")
    p.add_argument("--negatives", type=int, default=3, help="hard negatives per query (default 3)")
    args = p.parse_args(argv)
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    try:
        written = convert(args.root, languages, args.out, args.collection, args.queries, args.triples,
                          args.negatives)
    except (ConvertError, pa.ArrowInvalid) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    for code, rows in written.items():
        print(f"{code}: {rows} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
