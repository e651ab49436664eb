"""Time and peak memory of `hbt eval` as the corpus grows: XQuAD-R as it is (1x) and synthetic
copies of it N times its size (each article repeated with new titles and question ids), every
scale evaluated the way a user runs it: `hbt eval` in its own process, on its own local Ray
(encode actors, one faiss shard actor per language), with the same model, languages, batch
size and index factory.

Memory is sampled every `--interval` seconds over the whole process tree of that `hbt eval`:
the driver, Ray's GCS, raylet and dashboard, and every Ray worker (encode and shard actors).
Each process counts its proportional set size (PSS: shared pages split among the processes
that share them), so the sum is the memory the run really holds. Printed per scale: wall time,
peak total PSS, the peak of the largest encode actor and of the largest shard actor, and the
growth of each from the first scale.

    python benchmarks/eval_memory.py --model runs/models/e5-small --scales 1,10 \
        --index-factory IVF256,Flat --json runs/bench/eval_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import psutil
from bench_rounds import positive_int, tree_pss

from hbt.config import REPO_ROOT, default_data_dir
from hbt.data.lareqa import read_lareqa
from hbt.io import write_json_atomic
from hbt.languages import XQUAD_R_LANGUAGES

# Ray titles its worker processes after their actor: the kinds reported apart.
ROLES = {"encode": "EncodeActor", "shard": "ShardActor"}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model dir (e.g. runs/models/e5-small)")
    parser.add_argument("--corpus", type=Path, help="LAReQA dir (default: the data dir's xquad-r)")
    parser.add_argument("--languages", default=",".join(XQUAD_R_LANGUAGES), help="default: all 11")
    parser.add_argument("--scales", default="1,10", help="corpus sizes as multiples of the corpus (default 1,10)")
    parser.add_argument("--index-factory", default="Flat", help="eval.index_factory for every scale, "
                        "e.g. IVF256,Flat (an IVF index needs at least its list count of candidates per language)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between memory samples (reading "
                        "every process's PSS costs CPU: sample too often and the run slows)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every scale's `hbt eval`, e.g. eval.lareqa_exact_max=1 "
                        "(LAReQA scored from the shards' top-k)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.scales = [positive_int(s) for s in args.scales.split(",")]
    args.corpus = args.corpus or default_data_dir() / "xquad-r"
    return args


def scaled_corpus(corpus: Path, languages: list[str], scale: int, out: Path) -> Path:
    """`corpus`'s language files with every article repeated `scale` times (titles and question
    ids made unique), so every scale holds the same texts, `scale` times over."""
    if scale == 1:
        return corpus
    out.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        raw = json.loads((corpus / f"{lang}.json").read_text(encoding="utf-8"))
        copies = []
        for copy in range(scale):
            for article in raw["data"]:
                paragraphs = [{**p, "qas": [{**qa, "id": f"{qa['id']}~{copy}"} for qa in p["qas"]]}
                              for p in article["paragraphs"]]
                copies.append({**article, "title": f"{article['title']} ~{copy}", "paragraphs": paragraphs})
        (out / f"{lang}.json").write_text(json.dumps({**raw, "data": copies}), encoding="utf-8")
    return out


class TreeMemory:
    """Peak PSS of a process and all its descendants, sampled on a thread: of the whole tree, of
    the process itself (`peak_root`), and of the largest process of each role (`roles`: role ->
    a marker in the command line, as Ray titles an actor's process after its class)."""

    def __init__(self, root: int, interval: float, roles: Optional[dict[str, str]] = None):
        self.root, self.interval = psutil.Process(root), interval
        self.roles = roles or ROLES
        self.peak_total = self.peak_root = 0
        self.peak_by_role = {role: 0 for role in self.roles}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        total = 0
        for process, title, pss in tree_pss(self.root):
            total += pss
            if process.pid == self.root.pid:
                self.peak_root = max(self.peak_root, pss)
            for role, marker in self.roles.items():
                if marker in title:
                    self.peak_by_role[role] = max(self.peak_by_role[role], pss)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except psutil.Error:
                pass
            self._stop.wait(self.interval)


def eval_command(model: Path, corpus: Path, languages: list[str], out: Path, args) -> list[str]:
    return [sys.executable, "-m", "hbt.cli", "eval", "--model", str(model), "--corpus", str(corpus),
            "--languages", ",".join(languages), "--out", str(out),
            "--set", f"eval.index_factory={args.index_factory}", "--set", f"eval.batch_size={args.batch_size}",
            *[a for override in args.overrides for a in ("--set", override)]]


def measure(corpus: Path, languages: list[str], scale: int, work: Path, args) -> dict:
    out = work / f"eval-{scale}x"
    started = time.perf_counter()
    process = subprocess.Popen(eval_command(args.model, corpus, languages, out, args), cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(process.pid, args.interval) as memory:
        stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"hbt eval at {scale}x failed: {stderr.strip().splitlines()[-1] if stderr.strip() else stdout}")
    result = json.loads((out / "results.json").read_text())
    read = read_lareqa(corpus, languages)
    return {"scale": scale, "seconds": seconds, "questions": read.queries.num_rows,
            "candidates": read.candidates.num_rows, "peak_pss_mb": memory.peak_total / 2**20,
            **{f"peak_{role}_mb": peak / 2**20 for role, peak in memory.peak_by_role.items()},
            "multi_map": result["settings"]["multi"]["map"]}


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| scale | questions | candidates | wall s | x time | peak PSS, all processes (MB) | x memory "
             "| largest encode actor (MB) | largest shard actor (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['scale']}x | {row['questions']} | {row['candidates']} | {row['seconds']:.1f} | "
                     f"{row['seconds'] / base['seconds']:.2f} | {row['peak_pss_mb']:.0f} | "
                     f"{row['peak_pss_mb'] / base['peak_pss_mb']:.2f} | {row['peak_encode_mb']:.0f} | "
                     f"{row['peak_shard_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    languages = args.languages.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hbt-eval-memory-") as tmp:
        for scale in args.scales:
            corpus = scaled_corpus(args.corpus, languages, scale, Path(tmp) / f"corpus-{scale}x")
            rows.append(measure(corpus, languages, scale, Path(tmp), args))
            print(f"{scale}x: {rows[-1]['seconds']:.1f} s, peak {rows[-1]['peak_pss_mb']:.0f} MB", file=sys.stderr)
    print(f"hbt eval, {args.model}, {len(languages)} languages, index {args.index_factory}, "
          f"{os.cpu_count()} cores")
    print(table(rows))
    if args.json is not None:
        write_json_atomic(args.json, {"model": str(args.model), "languages": languages,
                                      "index_factory": args.index_factory, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
