"""A tiny random BERT + offline-trained WordLevel tokenizer, saved as a HF model dir (for tests)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Optional

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def default_vocab_words() -> list[str]:
    """A few hundred deterministic words: syllable pairs, prefix words, digits and punctuation."""
    syllables = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze", "ba", "de", "fo", "gi", "ho", "ju", "ly"]
    words = [a + b for a in syllables for b in syllables]  # 289 words
    words += ["query", "passage", "the", "a", "of", "and", "is", "what", "who", "where", "when", "how", "hello",
              "world"]
    words += list(string.digits) + list(string.punctuation)
    return words


def tiny_bert(dir: Path, vocab_words: Optional[list[str]] = None) -> Path:
    """Save a random BertModel (hidden 32, 2 layers, 2 heads, intermediate 64) and a WordLevel
    tokenizer trained offline on `vocab_words` (default: `default_vocab_words()`) into `dir`.

    The result loads with `AutoModel.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)`.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    words = list(vocab_words) if vocab_words is not None else default_vocab_words()

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=len(words) + len(SPECIAL_TOKENS) + 16,
                                        special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tok.train_from_iterator([" ".join(words)], trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(dir)

    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(dir)
    return dir
