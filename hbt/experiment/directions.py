"""Every corpus side by side: each arm's difference to the reference on each corpus's headline
metric, and the places where an arm's difference points one way on one corpus and the other
way on another (in domain against out of domain, say).

A corpus's headline metric: pooled multilingual mAP (Mul) for LAReQA, bitext accuracy for
Tatoeba, the first reported metric for BEIR (nDCG@10). Beyond the headlines, a metric that
several corpora share (Mo, Cr, Mul, RD on two LAReQA corpora) is compared too. Directions are
"better" / "worse" for the arm (rank distance: lower is better), from the point difference of
the seed-pooled arms; whether each CI excludes 0 is said beside it.
"""

from __future__ import annotations

from hbt.eval.report import ci_cell

HEADLINE = {"lareqa": "multi_map", "tatoeba": "accuracy"}


def headline(comparison: dict) -> str:
    """The metric a corpus is summed up by (see the module docstring)."""
    if comparison["kind"] in HEADLINE:
        return HEADLINE[comparison["kind"]]
    return next(iter(next(iter(comparison["arms"].values()))["metrics"]))


def direction(metric: str, ci: dict) -> str:
    """Whether the arm is better or worse than the reference by this difference."""
    gain = -ci["diff"] if metric == "rank_distance" else ci["diff"]
    return "better" if gain > 0 else "worse" if gain < 0 else "level"


def _differences(comparisons: dict[str, dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """arm -> metric -> corpus -> CI of arm - reference, for every arm but the reference."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for corpus, comparison in comparisons.items():
        for arm, row in comparison["arms"].items():
            for metric, ci in (row["vs_reference"] or {}).items():
                if ci is not None:
                    out.setdefault(arm, {}).setdefault(metric, {})[corpus] = ci
    return out


def across_corpora(comparisons: dict[str, dict]) -> dict:
    """The headline of each corpus and every arm x metric whose direction differs between corpora."""
    headlines = {corpus: headline(comparison) for corpus, comparison in comparisons.items()}
    changes = []
    for arm, metrics in _differences(comparisons).items():
        compared = {metric: by_corpus for metric, by_corpus in metrics.items() if len(by_corpus) > 1}
        compared["headline"] = {corpus: metrics[metric][corpus] for corpus, metric in headlines.items()
                                if corpus in metrics.get(metric, {})}
        for metric, by_corpus in compared.items():
            ways = {corpus: direction(headlines[corpus] if metric == "headline" else metric, ci)
                    for corpus, ci in by_corpus.items()}
            if len(set(ways.values()) - {"level"}) > 1:
                changes.append({"arm": arm, "metric": metric, "directions": ways,
                                "significant": {corpus: ci["significant"] for corpus, ci in by_corpus.items()}})
    return {"headlines": headlines, "direction_changes": changes}


def format_across(comparisons: dict[str, dict], across: dict, reference: str, labels: dict[str, str]) -> list[str]:
    """The report's side-by-side section: a table of headline differences, then the call-outs."""
    if len(comparisons) < 2:
        return []
    headlines = across["headlines"]
    columns = [f"{corpus} Δ{labels.get(metric, metric)} [95% CI]" for corpus, metric in headlines.items()]
    lines = ["## Every corpus side by side", "", f"| arm - {reference} | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    arms = [arm for arm, row in next(iter(comparisons.values()))["arms"].items() if row["vs_reference"] is not None]
    for arm in arms:
        cells = [ci_cell(metric, comparisons[corpus]["arms"][arm]["vs_reference"][metric])
                 for corpus, metric in headlines.items()]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines.append("")
    if not across["direction_changes"]:
        return lines + ["Every arm's differences to the reference point the same way on every corpus.", ""]
    lines.append("Differences in direction between corpora (against the reference; * = the CI excludes 0):")
    lines.append("")
    for change in across["direction_changes"]:
        metric = change["metric"]
        what = "the headline metric" if metric == "headline" else labels.get(metric, metric)
        ways = ", ".join(f"{way} on {corpus}{'*' if change['significant'][corpus] else ''}"
                         for corpus, way in change["directions"].items())
        lines.append(f"- {change['arm']} on {what}: {ways}")
    return lines + [""]
