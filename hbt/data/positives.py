"""Positive keys: which training records answer with the same passage.

A batch must not hold two records whose positives are the same passage: each query would
meet the other's positive, its own answer, as a negative. In XQuAD about half of the
questions share their answer sentence with another question of the paragraph (three in
four in Thai, whose paragraphs are few, long sentences), and in an X-Y batch the colliding
positive is the *translation* of the query's own answer.

A passage is identified, per language, by its text (identical texts are the same passage
to the encoder) and, where a source gives one, by its `positive_id` (shared by the
passage's translations). Two records are linked when their positives share an identity in
any language; a record's **positive key** names its connected component, so it is the
same for all the record's languages and for every record that could be the other's false
negative in any language pairing:

    q1 (en: S1, th: T)   q2 (en: S2, th: T)   q3 (en: S2, th: U)
    -> q1 ~ q2 (Thai T), q2 ~ q3 (English S2): one key for all three

How, for millions of rows: every record and every identity is a node of a bipartite graph,
each row an edge (record, its (lang, text) identity) plus one (record, its (source,
positive_id) identity); identities are dictionary codes (`pyarrow.compute.dictionary_encode`),
and the components are scipy's `connected_components` of that graph: no Python loop over rows.

Two steps, because the pool loses rows between them (`data.max_train_records`,
`data.imbalance`): `link_positives` finds the components on every row read, so a record keeps
its link through a row (a language) that is dropped later, whose positive is still the
translation of its partner's; `number_records` then numbers the records that remain. A
record's `key` is the smallest record number of its component and `positive_key` that record's
parallel id (the component's smallest id). A hard negative's key is the key of the records whose
positive it is (same language and text), else -1: the loop masks it for exactly those queries
(`hbt.losses.infonce`), and the composer never picks it for a batch that holds them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hbt.data.columns import codes, take_rows
from hbt.data.schema import TRAIN_PAIR_SCHEMA

COMPONENT = "component"                     # per row: its record's component
NEGATIVE_COMPONENTS = "negative_components"  # per hard negative: the component it is a positive of, or -1
NO_KEY = -1


def link_positives(table: pa.Table) -> pa.Table:
    """`table` (raw pair columns, `source`, prefixed `parallel_id`) with COMPONENT and
    NEGATIVE_COMPONENTS appended (module doc)."""
    record, records = codes(table.column("parallel_id"))
    text_identity, negative_identity, num_text_identities = _text_identities(table)
    source, sources = codes(table.column("source"))
    passage, _ = codes(table.column("positive_id"))
    named = passage >= 0
    id_identity, id_identities = codes(pa.array(passage[named] * len(sources) + source[named]))
    # Graph nodes: the records, then the (lang, text) identities, then the (source, positive_id) ones.
    first_text, first_id = len(records), len(records) + num_text_identities
    labels = _components(np.concatenate([record, record[named]]),
                         np.concatenate([text_identity + first_text, id_identity + first_id]),
                         first_id + len(id_identities))
    matched = negative_identity < num_text_identities
    negative_component = np.full(len(negative_identity), NO_KEY, np.int64)
    negative_component[matched] = labels[first_text + negative_identity[matched]]
    return (table.append_column(COMPONENT, pa.array(labels[record]))
            .append_column(NEGATIVE_COMPONENTS, _like_lists(table.column("hard_negatives"), negative_component)))


def _text_identities(table: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """(the (lang, positive) identity of every row, the (lang, text) identity of every hard
    negative, the number of positives' identities). Identities are numbered positives first, so a
    hard negative is some row's positive exactly when its number is below that count."""
    lang, langs = codes(table.column("lang"))
    text, texts = codes(table.column("positive"))
    negatives = table.column("hard_negatives")
    negative_text = pc.fill_null(pc.index_in(pc.list_flatten(negatives), value_set=texts), -1).to_numpy()
    negative_pair = np.where(negative_text >= 0, negative_text * len(langs) + lang[_owners(negatives)], -1)
    identity, _ = codes(pa.array(np.concatenate([text * len(langs) + lang, negative_pair])))
    positives = identity[:table.num_rows]
    return positives, identity[table.num_rows:], int(positives.max(initial=-1)) + 1


def _owners(lists: pa.ChunkedArray) -> np.ndarray:
    """The row of every element of `lists`, flattened."""
    starts = np.cumsum([0] + [len(chunk) for chunk in lists.chunks])
    return np.concatenate([np.zeros(0, np.int64)] + [pc.list_parent_indices(chunk).to_numpy() + start
                                                     for chunk, start in zip(lists.chunks, starts)])


def _components(rows: np.ndarray, nodes: np.ndarray, num_nodes: int) -> np.ndarray:
    """The connected component of every node of the graph with edges `rows[i]`-`nodes[i]`."""
    edges = coo_matrix((np.ones(len(rows), np.int8), (rows, nodes)), shape=(num_nodes, num_nodes))
    _, labels = connected_components(edges, directed=False)
    return labels.astype(np.int64)


def _like_lists(lists: pa.ChunkedArray, values: np.ndarray) -> pa.ChunkedArray:
    """`values` (one per element of `lists`, flattened) as lists shaped as `lists` (a null list: empty)."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.chunked_array([pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()))])


def _ranks(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(each value's rank among the column's distinct values in sorted order, those values sorted)."""
    code, distinct = codes(column)
    order = pc.array_sort_indices(distinct).to_numpy()
    rank = np.empty(len(distinct), np.int64)
    rank[order] = np.arange(len(distinct))
    return rank[code], distinct.take(order)


def number_records(table: pa.Table) -> pa.Table:
    """`link_positives`' table, after any rows were dropped -> TRAIN_PAIR_SCHEMA rows sorted by
    (record, lang): `record` is the rank of `parallel_id` among the table's distinct ids in
    sorted order; `key` and `negative_keys` are record numbers (module doc)."""
    keys, order = record_keys(table)
    columns = {name: table.column(name) for name in TRAIN_PAIR_SCHEMA.names if name in table.column_names}
    columns.update(zip(keys.column_names, keys.columns))
    out = pa.table([columns[name] for name in TRAIN_PAIR_SCHEMA.names], schema=TRAIN_PAIR_SCHEMA)
    return take_rows(out, order)


def record_keys(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """(`record`, `key`, `positive_key`, `negative_keys` of every row of `number_records`' input,
    in its order; the rows' (record, lang) order)."""
    record, sorted_ids = _ranks(table.column("parallel_id"))
    component = table.column(COMPONENT).to_numpy()
    none = np.iinfo(np.int64).max
    smallest = np.full(int(component.max(initial=-1)) + 1, none)  # per component: its smallest record left
    np.minimum.at(smallest, component, record)
    key = smallest[component]

    negative_components = table.column(NEGATIVE_COMPONENTS).combine_chunks()
    flat = negative_components.flatten().to_numpy()
    negative_key = np.full(len(flat), NO_KEY, np.int64)
    known = (flat >= 0) & (flat < len(smallest))
    negative_key[known] = smallest[flat[known]]
    negative_key[negative_key == none] = NO_KEY  # the positive of records that were all dropped
    offsets = negative_components.offsets.to_numpy() - negative_components.offsets[0].as_py()

    keys = pa.table({
        "record": pa.array(record.astype(np.int32)),
        "key": pa.array(key.astype(np.int32)),
        "positive_key": sorted_ids.take(pa.array(key)),
        "negative_keys": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                                  pa.array(negative_key.astype(np.int32))),
    }, schema=pa.schema([TRAIN_PAIR_SCHEMA.field(name) for name in ("record", "key", "positive_key", "negative_keys")]))
    lang, _ = _ranks(table.column("lang"))
    return keys, np.lexsort((lang, record))
