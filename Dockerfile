# One image for the kubepd operator and the PD sidecar, for builders with a registry.
# scripts/build-image makes the same image with no registry and no Docker engine
# (docs/image.md): Debian bookworm's python3, a venv at /opt/kubepd holding kubepd and the
# pinned dependencies of requirements.lock, user 65534, entrypoint `kubepd`.
FROM debian:bookworm-slim AS kubepd
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md requirements.lock /src/
COPY pdcore /src/pdcore
COPY pdsim /src/pdsim
COPY operator /src/operator
RUN python3 -m venv /opt/kubepd \
 && /opt/kubepd/bin/pip install --no-cache-dir -c /src/requirements.lock '/src[kube,wasm]' \
 && rm -rf /src
ENV PATH=/opt/kubepd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
USER 65534:65534
ENTRYPOINT ["kubepd"]

# `docker build --target tikv-standin`: a simulated TiKV store taking tikv-server's flags.
FROM kubepd AS tikv-standin
USER 0:0
ENTRYPOINT ["kubepd", "tikv-standin"]

FROM kubepd
