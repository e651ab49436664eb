"""Language codes the project knows, and the language pairs of an evaluation."""

from itertools import permutations

from hbt.errors import ConfigError

# XQuAD-R / XQuAD languages (ISO 639-1); ro is in XQuAD only.
XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")

# Every ISO 639-1 code: training sources (mMARCO-style pairs, your own) may be in any language.
ISO_639_1 = frozenset("""
    aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz
    ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii
    ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi
    mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw
    sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk
    ur uz ve vi vo wa wo xh yi yo za zh zu""".split())
KNOWN_LANGUAGES = ISO_639_1

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
            listed = ", ".join(sorted(known)) if len(known) <= 20 else "ISO 639-1 codes such as en, de, zh"
            raise ConfigError(f"unknown language code {code!r} (expected {listed})")
    if len(set(codes)) != len(codes):
        raise ConfigError(f"language list repeats a code: {codes}")
    return codes


def cross_pairs(languages) -> list[tuple[str, str]]:
    """Every ordered (query_lang, cand_lang) pair with the two languages different."""
    return list(permutations(languages, 2))
