"""Evaluation for multilingual retrieval (LAReQA protocol).

:mod:`hbt.eval.metrics` holds the array/dict-level metrics: LAReQA mean average
precision (sklearn-compatible AP over the whole pooled candidate set), the
``ranx``-backed standard metrics (recall@k, nDCG@10, MRR, MAP), and the
rank-distance language-bias measure.
"""
