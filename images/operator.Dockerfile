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

FROM ${PYTHON_IMAGE} AS deps
# A package mirror, for networks that cannot reach PyPI (the build stage is not shipped).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv, so the runtime stage copies exactly the installed packages and nothing else.
RUN python -m venv /opt/distillery
# Dependencies first, in their own layer: a code change does not reinstall them.
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN /opt/distillery/bin/pip install -r /tmp/requirements.txt

# The package itself, as a wheel, installed on top of the copied dependency venv in the
# runtime stage: a code change rebuilds only that small layer.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# No download: the build backend is in the venv (requirements.txt has it).
RUN /opt/distillery/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheel .

FROM ${PYTHON_IMAGE}
# A name for uid/gid 65532 (distroless calls it "nonroot"): kopf names its peering identity after
# the user (getpass.getuser()), which fails with "uid not found" when /etc/passwd has no entry,
# and the operator then exits at start.
RUN echo "nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "nonroot:x:65532:" >> /etc/group
COPY --from=deps /opt/distillery /opt/distillery
# A non-editable install: the image gets no source tree, only site-packages.
COPY --from=build /wheel /tmp/wheel
RUN /opt/distillery/bin/pip install --no-cache-dir --no-deps --no-index /tmp/wheel/*.whl \
 && rm -rf /tmp/wheel \
 && /opt/distillery/bin/distillery --version
ENV PATH=/opt/distillery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Numeric uid:gid (the distroless "nonroot" id), so `runAsNonRoot: true` can be verified by
# the kubelet without a passwd entry. The operator writes no files: it runs with a read-only
# root filesystem and nothing mounted.
USER 65532:65532
ENTRYPOINT ["distillery", "operator"]
