# One image for the kubepd operator and the PD sidecar.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY pdcore ./pdcore
COPY pdsim ./pdsim
COPY operator ./operator
RUN pip install --no-cache-dir '.[kube,wasm]'
USER 65534
ENTRYPOINT ["kubepd"]
