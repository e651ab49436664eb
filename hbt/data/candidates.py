"""How a passage is written for the encoder, the same in training and evaluation.

One switch, `model.candidate_context`: a passage is its sentence, or its sentence followed
by its paragraph (LAReQA encodes the answer sentence together with its context). The
sentence comes first so that truncation at `model.max_length` keeps it.
"""

from __future__ import annotations

from typing import Sequence


def candidate_text(sentence: str, context: str, with_context: bool) -> str:
    """`sentence`, or `sentence + " " + context` when `with_context` and there is a context."""
    return f"{sentence} {context}" if with_context and context else sentence


def candidate_texts(sentences: Sequence[str], contexts: Sequence[str], with_context: bool) -> list[str]:
    return [candidate_text(s, c, with_context) for s, c in zip(sentences, contexts)]
