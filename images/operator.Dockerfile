# The Distillery operator: kopf + the Kubernetes client + prometheus-client. No torch, no vLLM.
#   docker build -f images/operator.Dockerfile -t distillery-operator:dev .
# (or hack/build-images.sh). Needs no BuildKit feature: Docker's legacy builder builds it too.
# Pin the base by digest (python:3.11.14-slim-bookworm@sha256:...) when publishing releases.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# What the image installs, read from pyproject.toml alone. The build stage copies only this
# stage's output, so a change elsewhere in pyproject.toml keeps the dependency layer cached.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml images/requirements.py ./
RUN python requirements.py pyproject.toml operator > requirements.txt

FROM ${PYTHON_IMAGE} AS build
# A package mirror, for networks that cannot reach PyPI (the build stage is not shipped).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv, so the runtime stage copies exactly the installed packages and nothing else.
RUN python -m venv /opt/distillery
# Dependencies first, in their own layer: a code change does not reinstall them.
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN /opt/distillery/bin/pip install -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A non-editable install: the runtime stage gets no source tree, only site-packages. The
# build backend is already in the venv (requirements.txt has it), so nothing is downloaded.
RUN /opt/distillery/bin/pip install --no-deps --no-build-isolation . \
 && /opt/distillery/bin/distillery --version

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/distillery /opt/distillery
ENV PATH=/opt/distillery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Numeric uid:gid (the distroless "nonroot" id), so `runAsNonRoot: true` can be verified by
# the kubelet without a passwd entry. The operator writes no files: it runs with a read-only
# root filesystem and nothing mounted.
USER 65532:65532
ENTRYPOINT ["distillery", "operator"]
