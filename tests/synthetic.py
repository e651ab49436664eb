"""A synthetic LAReQA corpus whose relevance structure is known exactly."""

import json

LANGS = ["en", "de", "es"]
N_ART, N_SENT = 2, 3  # one paragraph per article; questions answered by sentences 0 and 2
DIM = N_ART * N_SENT


def _doc(lang):
    data = []
    for a in range(N_ART):
        sents = [f"{lang} sentence ID{a * N_SENT + s} words." for s in range(N_SENT)]
        context, breaks = "", []
        for s in sents:
            start = len(context) + (1 if context else 0)
            context = (context + " " + s) if context else s
            breaks.append([start, start + len(s)])
        qas = []
        for n, s in enumerate([0, 2]):
            tag = a * N_SENT + s
            # de questions answered by sentence 2 carry a distractor tag (sentence 1 of the paragraph)
            alt = f" ALT{a * N_SENT + 1}" if lang == "de" and s == 2 else ""
            qas.append({"id": f"q{a}{n}", "question": f"what {lang} ID{tag}{alt}?",
                        "answers": [{"answer_start": breaks[s][0], "text": lang}]})
        data.append({"title": f"t{a}", "paragraphs": [{"context": context, "sentences": sents,
                                                       "sentence_breaks": breaks, "qas": qas}]})
    return {"data": data}


def write_corpus(directory):
    """{lang}.json for every language of LANGS into `directory`."""
    directory.mkdir()
    for lang in LANGS:
        (directory / f"{lang}.json").write_text(json.dumps(_doc(lang)))
    return directory
