"""Language codes the project knows, and the language pairs of an evaluation."""

from itertools import permutations

from hbt.errors import ConfigError

# XQuAD-R / XQuAD languages (ISO 639-1); ro is in XQuAD only.
XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
KNOWN_LANGUAGES = frozenset(XQUAD_R_LANGUAGES) | {"ro"}

# The paper's 9 training languages, in the order "the first N languages" takes them.
PAPER_TRAIN_ORDER = ("en", "de", "es", "ru", "zh", "ar", "hi", "tr", "th")

# Tatoeba (LASER layout) names languages with ISO 639-3 codes.
ISO3_TO_ISO1 = {
    "ara": "ar", "cmn": "zh", "deu": "de", "ell": "el", "eng": "en", "hin": "hi",
    "rus": "ru", "spa": "es", "tha": "th", "tur": "tr", "vie": "vi", "ron": "ro",
}


def check_languages(codes, known=KNOWN_LANGUAGES) -> list[str]:
    """Return `codes` as a list, or raise ConfigError naming the first unknown or repeated code."""
    codes = list(codes)
    for code in codes:
        if code not in known:
            raise ConfigError(f"unknown language code {code!r} (known: {', '.join(sorted(known))})")
    if len(set(codes)) != len(codes):
        raise ConfigError(f"language list repeats a code: {codes}")
    return codes


def cross_pairs(languages) -> list[tuple[str, str]]:
    """Every ordered (query_lang, cand_lang) pair with the two languages different."""
    return list(permutations(languages, 2))
