# syntax=docker/dockerfile:1.7
# hbt's image for KubeRay (k8s/, docs/kubernetes.md) and Ray's cluster launcher
# (cluster/gpu-cluster.yaml): Python 3.11, torch, Ray and hbt, run as uid 1000. One file, two
# variants, each tagged with hbt's version (docs/kubernetes.md: never push a tag twice):
#   docker build --build-arg VARIANT=cpu  -t hbt:0.1.0-cpu  .   # python:3.11-slim, CPU torch, faiss-cpu
#   docker build --build-arg VARIANT=cuda -t hbt:0.1.0-cuda .   # CUDA base, CUDA torch, faiss-cpu
# The image holds the installed package, not the repository: configs and tune spaces come from
# the ConfigMap that k8s/ generates, data and runs from the shared volume.
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The CUDA `base` flavour (the CUDA runtime's core and the variables NVIDIA's container toolkit
# reads), not `runtime`: torch's CUDA wheels bring their own cuBLAS, cuDNN, NCCL...
# as nvidia-* wheels, which would otherwise be in the image twice. The driver comes from the host
# and must run CUDA 12.8 (R570 or newer).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04

# ---- requirements: hbt's dependencies, from pyproject.toml alone ---------------------------------
# Nothing else of the repository comes in, so editing hbt/ leaves this stage, and the final stage's
# dependency layer that reads it, cached. pyproject.toml stays the one list of dependencies, the
# same for both variants: faiss-cpu in both (hbt's faiss shards run on CPUs, docs/evaluation.md).
FROM ${PYTHON_IMAGE} AS requirements
ARG VARIANT
COPY pyproject.toml /src/pyproject.toml
RUN python - "$VARIANT" /src/pyproject.toml > /requirements.txt <<'EOF'
import sys
import tomllib

variant, pyproject = sys.argv[1], sys.argv[2]
if variant not in ("cpu", "cuda"):
    sys.exit(f"VARIANT must be cpu or cuda, got {variant!r}")
with open(pyproject, "rb") as file:
    project = tomllib.load(file)["project"]

print("\n".join(project["dependencies"]))
EOF

# ---- wheel: hbt itself ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hbt ./hbt
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime bases: Python 3.11 in /opt/venv; bash and wget (KubeRay's probes use them); rsync and
# an ssh client, which Ray's cluster launcher needs (cluster/gpu-cluster.yaml): it copies files into
# the container with `rsync -e 'docker exec'`, and the head's autoscaler reaches the workers by ssh.
FROM ${PYTHON_IMAGE} AS base-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client rsync wget \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv

FROM ${CUDA_IMAGE} AS base-cuda
ENV DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04 has no Python 3.11 release of its own: the deadsnakes build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common wget \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends openssh-client python3.11 python3.11-venv rsync \
 && apt-get purge -y --auto-remove gpg-agent software-properties-common \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv

# ---- final ---------------------------------------------------------------------------------------
FROM base-${VARIANT} AS final
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ARG RAY_VERSION=2.60.0
# HOME: Ray's cluster launcher reads the container's home from the image's environment (else it
# takes /root, which uid 1000 cannot use) for the files it mounts under `~/`.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/ray \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# torch first, from its own index (CPU wheel or CUDA wheel): hbt's `torch>=2.3` then keeps it.
RUN case "$VARIANT" in \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      cuda) index="https://download.pytorch.org/whl/${TORCH_CUDA}" ;; \
      *) echo "VARIANT must be cpu or cuda, got '$VARIANT'" >&2; exit 1 ;; \
    esac \
 && pip install --index-url "$index" "torch==${TORCH_VERSION}"
# Then hbt's dependencies (Ray pinned to the version in k8s/base/raycluster.yaml), and boto3, which
# the cluster launcher's autoscaler needs on the head to start AWS workers. This layer depends on
# pyproject.toml alone (the `requirements` stage), not on hbt's sources.
RUN --mount=type=bind,from=requirements,source=/requirements.txt,target=/tmp/requirements.txt \
    pip install -r /tmp/requirements.txt "ray==${RAY_VERSION}" "torch==${TORCH_VERSION}" boto3
# hbt last: a source edit rebuilds this layer only. The wheel is bind-mounted: neither it nor any
# source stays in a layer. Every module the steps import, deepspeed's included, is tried here.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/hbt-*.whl \
 && python -c "import deepspeed, faiss, hbt.cli, ray, torch; print('hbt: ray', ray.__version__, 'torch', torch.__version__)"
# KubeRay starts Ray with `bash -lc`: a login shell, whose /etc/profile resets PATH on Debian.
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/hbt-venv.sh \
 && groupadd --gid 1000 ray \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/ray --shell /bin/bash ray \
 && mkdir -p /mnt/hbt \
 && chown 1000:1000 /mnt/hbt
USER 1000
WORKDIR /home/ray
CMD ["hbt", "--help"]
