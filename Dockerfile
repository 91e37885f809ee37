# Pequeroku web service image (and, as the "node-agent" target, the node agent image).
#
# Build (from the repository root; needs a Docker daemon and the base image):
#
#     docker build -t pequeroku-web-service .
#     docker build --target node-agent -t pequeroku-node-agent .
#
# Another base (e.g. a mirror): --build-arg BASE_IMAGE=registry.example.com/python:3.13-slim
#
# Dependencies: the runtime list of pyproject.toml's [project] table, installed with pip into
# /opt/venv (the dev extra is not installed). pip rather than Poetry because the project is
# PEP 621 with `package-mode = false` for Poetry: both read the same list, and pip needs no
# resolver access to the package index's JSON API.
ARG BASE_IMAGE=python:3.13-slim

# --- dependencies: one virtual environment, rebuilt only when pyproject.toml changes --------
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -r requirements.txt

# --- runtime: the venv, the application code and an unprivileged user -----------------------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHON=python \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=pequeroku.settings
RUN groupadd --system --gid 10001 pequeroku \
 && useradd --system --uid 10001 --gid pequeroku --create-home --home-dir /home/pequeroku \
        --shell /usr/sbin/nologin pequeroku
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY manage.py entrypoint.sh ./
COPY pequeroku ./pequeroku
COPY vm_manager ./vm_manager
COPY internal_config ./internal_config
COPY ai_services ./ai_services
COPY node_agent ./node_agent
# Code stays root-owned (read-only for the service); only collected static files, media and
# the audit spool (internal_config.audit_batch) are writable.
RUN mkdir -p /app/staticfiles /app/media /app/var/audit-spool \
 && chown pequeroku:pequeroku /app/staticfiles /app/media /app/var/audit-spool \
 && chmod 0755 /app/entrypoint.sh

# --- node agent: QEMU, nftables and the SSH client on top of the runtime -------------------
# The agent runs as root inside its container, with only the capabilities docker-compose.yml
# grants (cap_drop ALL; NET_ADMIN for the guest egress policy, SETUID/SETGID to start each VM's
# QEMU under an unprivileged uid of its own, KILL to stop those QEMUs): QEMU itself never runs as
# root nor as the agent, and the agent refuses VMs until its start-up self-test passes.
FROM runtime AS node-agent
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        qemu-system-x86 qemu-utils openssh-client nftables \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -m 0700 /var/lib/pequeroku
VOLUME ["/var/lib/pequeroku"]
EXPOSE 8081
# The token comes from NODE_AGENT_TOKEN (or --token-file); guest images are mounted at /images.
ENTRYPOINT ["python", "-m", "node_agent"]
CMD ["--listen", "0.0.0.0:8081", "--data-dir", "/var/lib/pequeroku", "--image-dir", "/images"]

# --- web (default target): Gunicorn with Uvicorn workers through entrypoint.sh --------------
FROM runtime AS web
USER pequeroku
EXPOSE 8000
VOLUME ["/app/media", "/app/var/audit-spool"]
# Probes the port of BIND (default 0.0.0.0:8000) on loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('BIND', '0.0.0.0:8000').rsplit(':', 1)[1]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["/app/entrypoint.sh"]
