"""Evaluation for multilingual retrieval (LAReQA protocol).

:mod:`hbt.eval.metrics` holds the metrics, on arrays: LAReQA mean average precision
(sklearn-compatible AP over the whole pooled candidate set), the top-k metrics (r@k, hit@k,
nDCG@10, MRR; ranx's values, checked against ranx in tests/eval/test_metrics.py) and the
rank-distance language-bias measure. Only BEIR's nDCG@10 and Recall@100 call ranx itself
(:mod:`hbt.eval.beir`).
"""
