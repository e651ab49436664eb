# syntax=docker/dockerfile:1.7
# hbt's image for KubeRay (k8s/, docs/kubernetes.md): Python 3.11, torch, Ray and hbt, run as
# uid 1000. One file, two variants:
#   docker build --build-arg VARIANT=cpu  -t hbt:cpu  .   # python:3.11-slim, CPU torch, faiss-cpu
#   docker build --build-arg VARIANT=cuda -t hbt:cuda .   # CUDA runtime, CUDA torch, faiss-cpu
# The image holds the installed package, not the repository: configs and tune spaces come from
# the ConfigMap that k8s/ generates, data and runs from the shared volume.
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04

# ---- builder: hbt's wheel, and the requirements to install it with ------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG VARIANT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hbt ./hbt
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# The wheel's own requirements, for the final stage to install before the wheel (--no-deps), the
# same for both variants (faiss-cpu in both: hbt's faiss shards run on CPUs, docs/evaluation.md).
# Reads the wheel's METADATA, so pyproject.toml stays the one list of dependencies.
RUN python - "$VARIANT" /wheels > /wheels/requirements.txt <<'EOF'
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

variant, wheels = sys.argv[1], Path(sys.argv[2])
if variant not in ("cpu", "cuda"):
    sys.exit(f"VARIANT must be cpu or cuda, got {variant!r}")
(wheel,) = wheels.glob("hbt-*.whl")
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    requires = Parser().parsestr(archive.read(name).decode()).get_all("Requires-Dist") or []
for line in requires:
    requirement, _, marker = (part.strip() for part in line.partition(";"))
    if not re.fullmatch(r"""extra\s*==\s*["']([^"']+)["']""", marker):
        print(line)
EOF

# ---- runtime bases: Python 3.11 in /opt/venv, bash and wget (KubeRay's probes use them) ---------
FROM ${PYTHON_IMAGE} AS base-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv

FROM ${CUDA_IMAGE} AS base-cuda
ENV DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04 has no Python 3.11 release of its own: the deadsnakes build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common wget \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove gpg-agent software-properties-common \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv

# ---- final ---------------------------------------------------------------------------------------
FROM base-${VARIANT} AS final
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ARG RAY_VERSION=2.60.0
ENV PATH=/opt/venv/bin:$PATH \
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
# Then hbt's requirements (Ray pinned to the version in k8s/base/raycluster.yaml), then the wheel
# itself. The builder's /wheels is bind-mounted: neither the wheel nor any source stays in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install -r /wheels/requirements.txt "ray==${RAY_VERSION}" "torch==${TORCH_VERSION}" \
 && pip install --no-deps /wheels/hbt-*.whl \
 && python -c "import faiss, hbt.cli, ray, torch; print('hbt: ray', ray.__version__, 'torch', torch.__version__)"
# KubeRay starts Ray with `bash -lc`: a login shell, whose /etc/profile resets PATH on Debian.
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/hbt-venv.sh \
 && groupadd --gid 1000 ray \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/ray --shell /bin/bash ray \
 && mkdir -p /mnt/hbt \
 && chown 1000:1000 /mnt/hbt
USER 1000
WORKDIR /home/ray
CMD ["hbt", "--help"]
