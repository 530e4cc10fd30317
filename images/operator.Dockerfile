# The Distillery operator: kopf + the Kubernetes client + prometheus-client. No torch, no vLLM.
#   docker build -f images/operator.Dockerfile -t distillery-operator:dev .
# Pin the base by digest (python:3.11.14-slim-bookworm@sha256:...) when publishing releases.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv, so the runtime stage copies exactly the installed packages and nothing else.
RUN python -m venv /opt/distillery
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A non-editable install: the runtime stage gets no source tree, only site-packages.
RUN /opt/distillery/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/distillery /opt/distillery
ENV PATH=/opt/distillery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric uid:gid (the distroless "nonroot" id), so `runAsNonRoot: true` can be verified by
# the kubelet without a passwd entry. The operator writes no files.
USER 65532:65532
ENTRYPOINT ["distillery", "operator"]
