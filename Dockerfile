# pushwire: one image for every service; the command names the service:
#   docker build -t pushwire .            (docs/compose.md: offline bases, compose)
#   docker run --rm pushwire room         (settings: PUSHWIRE_* variables, docs/config.md)
#
# PYTHON_IMAGE is any Debian-based image with Python >= 3.11 and its venv module: the official
# image by default; `scripts/compose` passes one built from Debian packages when no registry
# is reachable. Only the installed virtualenv reaches the final stage: no compiler, no pip
# cache, no sources, tests or benchmarks (.dockerignore lets in only what the two
# `pip install`s read).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/pushwire
WORKDIR /src
# The dependencies first, in a layer of their own: a code change does not reinstall them.
# Two distributions: the SDK (sdk/python: the client protocol the server shares) and the server.
COPY pyproject.toml ./
COPY sdk/python/pyproject.toml sdk/python/
RUN python3 -c 'import tomllib; print(*(d for f in ("pyproject.toml", "sdk/python/pyproject.toml") for d in tomllib.load(open(f, "rb"))["project"]["dependencies"] if not d.startswith("pushwire-sdk")), sep="\n")' >requirements.txt \
 && /opt/pushwire/bin/pip install -r requirements.txt
COPY . .
RUN /opt/pushwire/bin/pip install --no-deps ./sdk/python . \
 && /opt/pushwire/bin/pip check \
 && /opt/pushwire/bin/pushwire --version

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/pushwire --create-home \
        --shell /usr/sbin/nologin pushwire
COPY --from=build /opt/pushwire /opt/pushwire
# Every service listens on all interfaces of its container and serves /metrics and /health
# on 9090 (its own port inside its own network namespace).
ENV PATH=/opt/pushwire/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PUSHWIRE_HOME=/var/lib/pushwire PUSHWIRE_BIND=0.0.0.0 PUSHWIRE_METRICS_PORT=9090
USER pushwire
WORKDIR /var/lib/pushwire
EXPOSE 8000 8100 8200 9090
# 200 while the service is ready: announced in discovery with its address, not stopping or
# draining, and what it needs answers; 503 otherwise (docs/observability.md §3).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["python", "-Sc", \
    "import os,socket,sys; s=socket.create_connection(('127.0.0.1',int(os.environ['PUSHWIRE_METRICS_PORT'])),2); s.sendall(b'GET /health HTTP/1.0\\r\\n\\r\\n'); sys.exit(s.recv(12)[9:12]!=b'200')"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pushwire"]
CMD ["--help"]
