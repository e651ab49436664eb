"""Typed configuration: YAML file + `--set a.b=value` overrides, validated in one place.

Every stage reads an `HbtConfig`; it becomes a plain dict only at the Ray boundary
(`config.model_dump()`), and is rebuilt with `HbtConfig.model_validate` on the other side.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hbt.errors import ConfigError, validation_line
from hbt.languages import PAPER_TRAIN_ORDER, XQUAD_R_LANGUAGES, check_languages

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """`$HBT_DATA_DIR`, else `../shared/data` beside the repository, else `./data`."""
    if os.environ.get("HBT_DATA_DIR"):
        return Path(os.environ["HBT_DATA_DIR"])
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else Path("data")


def _checked_languages(codes) -> list[str]:
    # A ValueError lets pydantic prefix the message with the field's location.
    try:
        return check_languages(codes)
    except ConfigError as error:
        raise ValueError(str(error)) from None


class Section(BaseModel):
    # Unknown keys are errors, and values are not coerced across types: "7" is not 7, "yes" and 1
    # are not True (a float key takes an int). YAML and `--set` parse scalars already
    # (`--set train.steps=7` is the int 7, `--set train.bf16=true` the bool), so a string only
    # reaches a number key when it was quoted. Paths are the exception: they are written as text.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class SourceBase(Section):
    name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="prefix of the source's parallel ids (default: its kind, or the file stem)")
    weight: Optional[float] = Field(None, gt=0.0, description="share of the training pool, relative to the other "
                                    "sources' weights (None on every source: each source's natural size)")


class XquadSource(SourceBase):
    """The training articles of XQuAD, cut into XQuAD-R's sentences (hbt.data.squad)."""

    kind: Literal["xquad"] = "xquad"


class PairsSource(SourceBase):
    """Parallel pairs from a .jsonl / .parquet file, a directory or glob of such shards, or a
    `datasets.save_to_disk` dir (hbt.data.pairs)."""

    kind: Literal["pairs"]
    # A string, not a Path: a URI (s3://bucket/dir) would lose a slash as a Path.
    path: str = Field(description="a file, a directory or glob of .jsonl / .parquet shards (local or a URI "
                      "pyarrow reads: s3://, gs://...), or a datasets.save_to_disk dir")

    @field_validator("path", mode="before")
    @classmethod
    def _path_as_text(cls, path):
        return os.fspath(path) if isinstance(path, os.PathLike) else path


class TatoebaSource(SourceBase):
    """Tatoeba bitext: a sentence and its English translation as one parallel record (hbt.data.tatoeba)."""

    kind: Literal["tatoeba"]
    path: Optional[Path] = Field(None, strict=False, description="LASER-layout dir (default: DATA_DIR/tatoeba-laser)")


Source = Annotated[Union[XquadSource, PairsSource, TatoebaSource], Field(discriminator="kind")]


# The data keys a run applies to a prepared pool at training time (which of its languages it
# trains on): a tune trial may vary them, experiment arms that differ only in them share one
# pool, and changing them needs no new `hbt data prepare` (but a resumed run must keep them).
TRAINING_TIME_DATA_KEYS = ("data.languages", "data.num_languages", "data.language_seed")


class DataConfig(Section):
    data_dir: Path = Field(default_factory=default_data_dir, strict=False,
                           description="root holding xquad/, xquad-r/, tatoeba-laser/")
    prepared_dir: Path = Field(Path("prepared"), strict=False,
                               description="where `hbt data prepare` writes Parquet + manifest")
    sources: list[Source] = Field(default_factory=lambda: [XquadSource()], min_length=1,
                                  description="training sources, mixed by weight (hbt.data.sources)")
    languages: list[str] = Field(default_factory=lambda: list(PAPER_TRAIN_ORDER),
                                 description="training languages, in order")
    num_languages: Optional[int] = Field(None, ge=1, description="train on N of `languages` (the 'language count'): "
                                         "the first N, or a seeded choice of N with `language_seed`")
    language_seed: Optional[int] = Field(None, description="None: the first `num_languages` languages; an int: a "
                                         "seeded random subset of that size (sweeps over the count use several seeds, "
                                         "so the count is not confounded with one language order)")
    eval_languages: list[str] = Field(default_factory=lambda: list(XQUAD_R_LANGUAGES))
    heldout_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="fraction of XQuAD-R articles in the test split")
    dev_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of XQuAD-R articles in the dev split "
                                "(model selection, sweeps); 0: no dev split")
    split_seed: int = 0
    imbalance: dict[str, float] = Field(default_factory=dict, description="lang -> fraction of its records to keep")
    max_train_records: Optional[int] = Field(None, ge=1, description="keep at most N training records (parallel ids, "
                                             "a seeded choice); None: all (smoke runs, learning curves)")

    @field_validator("languages", "eval_languages")
    @classmethod
    def _known_languages(cls, codes: list[str]) -> list[str]:
        if not codes:
            raise ValueError("must name at least one language")
        return _checked_languages(codes)

    @field_validator("imbalance")
    @classmethod
    def _imbalance_fractions(cls, imbalance: dict[str, float]) -> dict[str, float]:
        _checked_languages(imbalance)
        for lang, fraction in imbalance.items():
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"fraction for {lang!r} must be in (0, 1], got {fraction}")
        return imbalance

    @model_validator(mode="after")
    def _language_count_fits(self) -> "DataConfig":
        if self.num_languages is not None and self.num_languages > len(self.languages):
            raise ValueError(f"num_languages={self.num_languages} exceeds the {len(self.languages)} listed languages")
        return self

    @model_validator(mode="after")
    def _sources_consistent(self) -> "DataConfig":
        names = [source_name(s) for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"sources: name {repeated[0]!r} is used twice (set `name` to tell them apart)")
        weighted = [s.weight is not None for s in self.sources]
        if any(weighted) and not all(weighted):
            raise ValueError("sources: give every source a weight, or none")
        if self.trains_on_xquad and self.dev_fraction + self.heldout_fraction >= 1.0:
            raise ValueError(f"dev_fraction {self.dev_fraction} + heldout_fraction {self.heldout_fraction} "
                             "leaves no XQuAD article to train on")
        return self

    @property
    def trains_on_xquad(self) -> bool:
        """Whether a source reads XQuAD, whose articles are the evaluation corpus's."""
        return any(s.kind == "xquad" for s in self.sources)

    @property
    def train_languages(self) -> list[str]:
        """The languages training uses: `num_languages` of `languages` (the first ones, or a
        seeded subset with `language_seed`), in the order of `languages`."""
        if not self.num_languages:
            return list(self.languages)
        if self.language_seed is None:
            return self.languages[: self.num_languages]
        import numpy as np

        chosen = np.random.default_rng(self.language_seed).choice(len(self.languages), self.num_languages,
                                                                  replace=False)
        return [self.languages[i] for i in sorted(chosen)]


def source_name(source) -> str:
    """A source's name: its `name`, else the stem of the pairs path (of its part before any glob
    character: `data/mmarco/*.parquet` -> mmarco), else its kind."""
    if source.name:
        return source.name
    if source.kind == "pairs":
        fixed = re.split(r"[*?[]", source.path, maxsplit=1)[0]
        return Path(fixed if fixed == source.path else fixed.rsplit("/", 1)[0]).stem or "pairs"
    return source.kind


# Bare sentences unless asked: see `ModelConfig.candidate_context`.
DEFAULT_CANDIDATE_CONTEXT = False


class ModelConfig(Section):
    name_or_path: str = Field("models/e5-small",
                              description="local HF dir or hub name (e.g. intfloat/multilingual-e5-small)")
    pooling: Literal["mean", "cls"] = "mean"
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    max_length: int = Field(128, ge=8, le=8192)
    candidate_context: Optional[bool] = Field(
        None, description="passages (training positives, hard negatives, eval candidates) carry their paragraph "
        "after the sentence; None: what the model was trained with (its hbt_training.json), else bare")

    def resolved_candidate_context(self) -> bool:
        return DEFAULT_CANDIDATE_CONTEXT if self.candidate_context is None else self.candidate_context


class BatchingConfig(Section):
    mode: Literal["xx", "xy", "hybrid"] = "hybrid"
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="probability of an X-X batch in hybrid mode")
    batch_size: int = Field(16, ge=1, description="pairs per worker per step")
    language_sampling: Literal["uniform", "proportional"] = "uniform"
    seed: int = 0


# Dev metrics the training loop reports (hbt.train.dev) and may select a checkpoint or a trial by.
SELECT_METRICS = ("dev/multi_map", "dev/mono_map", "dev/cross_map", "dev/rank_distance")
# The same, restricted to the query languages trained on / never trained on (hbt.train.dev).
GROUP_METRICS = tuple(f"{m}_{group}" for m in ("dev/multi_map", "dev/rank_distance") for group in ("trained", "unseen"))


class TrainConfig(Section):
    steps: int = Field(20, ge=1)
    lr: float = Field(3e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    temperature: float = Field(0.05, gt=0.0)
    symmetric_loss: bool = False
    hard_negatives: int = Field(0, ge=0,
                                description="hard negatives per pair (other sentences of the positive's paragraph)")
    num_workers: int = Field(1, ge=1)
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int = Field(2, ge=0, le=3)
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPU only: needs cluster.use_gpu)")
    torch_threads: Optional[int] = Field(None, ge=1, description="torch threads per worker (None: its whole reserved "
                                         "CPUs, else the node's usable CPUs / its workers; hbt.threads)")
    grad_accum: int = Field(1, ge=1)
    freeze_embeddings: bool = True
    checkpoint_every: int = Field(10, ge=1)
    report_every: int = Field(1, ge=1)
    report_poll_s: float = Field(0.2, gt=0.0, description="how often Ray Train's controller collects reports "
                                 "(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; Ray's default 2 s throttles faster reports)")
    max_failures: int = Field(0, ge=-1)
    eval_every: Optional[int] = Field(None, ge=1, description="evaluate on the prepared dev split every N steps "
                                      "(and at every checkpoint); the export is then the best checkpoint")
    select_metric: Literal[SELECT_METRICS + GROUP_METRICS] = Field(
        "dev/multi_map", description="dev metric that picks the exported checkpoint (rank distance: lowest, "
        "the others: highest)")
    select_checkpoint: Literal["best", "last"] = Field(
        "best", description="with eval_every: export the checkpoint best on dev by select_metric, or the last one "
        "(the dev scores are then only recorded: a learning curve)")


# Pooled candidates up to which a LAReQA corpus is scored exactly (eval.lareqa_exact_max): every
# query against every candidate is (queries x candidates x d) multiply-adds, quadratic: at 50,000
# candidates and as many queries of 384 dimensions about 1e12, a minute or two on 2 CPU cores.
# XQuAD-R pools 13,090 candidates in its 11 languages; MLQA-R fewer.
LAREQA_EXACT_MAX = 50_000


class EvalConfig(Section):
    index_factory: str = Field("Flat", description="faiss index of the searched shards: Flat (exact), or for "
                               "BEIR corpora past ~10M passages an approximate one, e.g. IVF4096,Flat, "
                               "IVF4096,PQ48, HNSW32 (docs/evaluation.md)")
    # 256: on 1M passages in IVF1024 shards, 0.997 of Flat's top 100 (64: 0.917) for ~the same
    # run time (benchmarks/README.md, "Evaluation at scale"); 1/16 of an IVF4096's lists.
    nprobe: int = Field(256, ge=1, description="IVF indexes: inverted lists searched per query")
    ef_search: int = Field(128, ge=1, description="HNSW indexes: candidates kept while searching")
    train_sample: int = Field(100_000, ge=1, description="IVF / PQ indexes: vectors of each shard they are trained on")
    recall_queries: int = Field(100, ge=1, description="an approximate index's Recall@100 against Flat is "
                                "measured on this many queries (the first ones) and reported")
    shard_docs: int = Field(250_000, ge=1, description="BEIR corpora: documents per embeddings shard file")
    embeddings_dir: Optional[str] = Field(None, description="BEIR corpora: where the embedding shards are written "
                                          "and resumed from (None: OUT.embeddings beside --out)")
    lareqa_exact_max: int = Field(LAREQA_EXACT_MAX, ge=1, description="LAReQA corpora: largest pooled candidate "
                                  "count scored exactly (every query against every candidate: quadratic); above it "
                                  "mAP and rank distance come from each query's top top_k (beyond it: not retrieved)")
    batch_size: int = Field(64, ge=1)
    top_k: int = Field(100, ge=10, description="candidates kept per query for the top-k metrics (>= 10: r@10, "
                       "hit@10 and ndcg@10 need the top 10)")
    encode_actors: int = Field(1, ge=1, description="Ray actors encoding the corpus (one per GPU on a GPU node)")
    encode_threads: Optional[int] = Field(None, ge=1, description="torch threads per encode actor (None: its whole "
                                          "reserved CPUs, else the node's usable CPUs; hbt.threads)")
    heldout_only: bool = Field(False,
                               description="drop corpus articles the model's training manifest says it was trained on")
    precision: Literal["fp32", "int8", "int8-accurate", "bf16"] = Field(
        "fp32",
        description="encoding precision of `hbt eval`: int8 = ONNX Runtime with int8 weights per channel (CPU), "
        "int8-accurate = the same with the feed-forward weights kept fp32 (slower, mAP within 0.005 of fp32), "
        "bf16 = bfloat16 weights (GPU)")


class TuneConfig(Section):
    """`hbt tune`: how trials are scored, scheduled and run (a space file may override these)."""

    metric: Literal[SELECT_METRICS + GROUP_METRICS] = Field(
        "dev/multi_map", description="the dev metric trials are compared, stopped and chosen by")
    eval_every: int = Field(10, ge=1, description="each trial scores the dev split every N steps (and at its end)")
    scheduler: Literal["fifo", "asha"] = Field("fifo", description="asha: stop trials that trail at a rung")
    grace_period: Optional[int] = Field(None, ge=1, description="ASHA: steps before a trial may be stopped "
                                        "(None: tune.eval_every)")
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA: keep the best 1/N of trials at each rung")
    num_samples: int = Field(1, ge=1, description="samples of the space (each grid point is run this many times)")
    max_concurrent: Optional[int] = Field(None, ge=1, description="trials at once (None: as many as the CPUs fit)")
    search_seed: int = Field(0, description="seed of the random draws of choice/uniform/loguniform/randint")


class ClusterConfig(Section):
    address: Optional[str] = Field(None,
                                   description="None: local in-process Ray; 'auto' or ray://... to join a cluster")
    num_cpus: Optional[int] = Field(2, ge=1)
    object_store_memory: Optional[int] = Field(256 * 1024**2, ge=78 * 1024**2)
    cpus_per_worker: float = Field(0.5, gt=0.0)
    cpus_per_data_task: float = Field(0.5, gt=0.0)
    use_gpu: bool = False
    storage_path: Optional[str] = Field(None, description="shared storage (local path, s3://, gs://) for checkpoints")


class HbtConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _bf16_needs_gpu(self) -> "HbtConfig":
        # bf16 is a GPU code path; CPU training (what CI runs) stays in float32.
        if self.train.bf16 and not self.cluster.use_gpu:
            raise ValueError("train.bf16 needs cluster.use_gpu=true (bf16 runs on GPUs only)")
        return self

    @model_validator(mode="after")
    def _eval_precision_fits_device(self) -> "HbtConfig":
        # int8 runs in ONNX Runtime on CPUs only; bfloat16 pays off on GPUs only.
        if self.eval.precision.startswith("int8") and self.cluster.use_gpu:
            raise ValueError(f"eval.precision={self.eval.precision} runs on CPUs (cluster.use_gpu=false); "
                             "on GPUs use bf16")
        if self.eval.precision == "bf16" and not self.cluster.use_gpu:
            raise ValueError("eval.precision=bf16 needs cluster.use_gpu=true (bf16 runs on GPUs only)")
        return self

    @model_validator(mode="after")
    def _dev_eval_fits_strategy(self) -> "HbtConfig":
        # Rank 0 encodes the dev split alone; under ZeRO-3 a forward pass needs every rank.
        tc = self.train
        if tc.eval_every is not None and tc.strategy == "deepspeed" and tc.zero_stage == 3:
            raise ValueError("train.eval_every needs ZeRO stage <= 2 "
                             "(rank 0 evaluates alone; ZeRO-3 shards the weights)")
        return self


class _Yaml12Numbers(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats: `1e-5` is a number (YAML 1.1 wants `1.0e-5`
    and would hand the strict config the string "1e-5")."""


_Yaml12Numbers.add_implicit_resolver("tag:yaml.org,2002:float",
                                     re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                     list("-+0123456789."))


def load_yaml(text: str):
    """`text` as YAML (safe), numbers as YAML 1.2 reads them."""
    loader = _Yaml12Numbers(text)  # a SafeLoader: builds no arbitrary object
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(assignment: str) -> tuple[list[str], object]:
    """`"batching.alpha=0.3"` -> (["batching", "alpha"], 0.3); the value is parsed as YAML,
    so `data.languages=[en,de,zh]` gives a list."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} is not of the form section.key=value")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML") from None
    return key.strip().split("."), value


def apply_override(tree: dict, path: list[str], value: object) -> None:
    """Set `tree[path[0]]...[path[-1]] = value`, creating sections; validation comes later."""
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


# Keys that moved: an old config gets told where, not just "unknown key".
MOVED_KEYS = {"eval.candidate_context": "model.candidate_context"}


def merge_layer(tree: dict, layer: dict) -> dict:
    """`layer` over `tree`: sections merge key by key, any other value (lists too) replaces."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge_layer(tree[key], value)
        else:
            tree[key] = copy.deepcopy(value)
    return tree


def read_yaml_mapping(path: Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping (or empty); anything else is one line."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return loaded or {}


ConfigPaths = Union[None, str, Path, list]


def load_config(paths: ConfigPaths = None, overrides: list[str] = (), base: Optional[dict] = None) -> HbtConfig:
    """Load YAML at `paths` (one file, or several layered: later files override earlier ones
    key by key), or `base`, or defaults; apply `--set` overrides; validate once.

    Example:
        >>> cfg = load_config(None, ["batching.alpha=0.3", "data.languages=[en,de]"])
        >>> cfg.batching.alpha, cfg.data.languages
        (0.3, ['en', 'de'])
    """
    tree: dict = copy.deepcopy(base or {})  # overrides write into nested sections: never into `base`
    paths = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in map(Path, paths):
        merge_layer(tree, read_yaml_mapping(path))
    source = " + ".join(map(str, paths)) or "config"
    for assignment in overrides:
        apply_override(tree, *parse_override(assignment))
    try:
        return HbtConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(validation_line(error, source, moved=MOVED_KEYS)) from None
