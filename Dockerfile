# agent-proxy: a sidecar reverse proxy for LLM and tool traffic.
#   docker build -t agent-proxy .
#   docker run -p 8080:8080 agent-proxy                      # offline demo (built-in mock upstream)
# Hardened, as in deploy/kubernetes/: read-only root filesystem, writable only /tmp and the ledger volume:
#   docker run --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
#     -v agent-proxy-ledger:/var/lib/agent-proxy -v $PWD/policies:/etc/agent-proxy:ro \
#     -e OPENAI_API_KEY=... -p 8080:8080 agent-proxy serve --policy /etc/agent-proxy/default.yaml --host 0.0.0.0
# Versions come from constraints.txt (regenerate with `python .ci/lock.py > constraints.txt`).
# .ci/container_check.py runs this file's install and start commands (no Docker engine needed), and CI
# lints it with hadolint: keep the install a single RUN with `pip install` in the build stage.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY proxy ./proxy
# The semantic cache's built-in embedder (the `semantic` extra) would triple the venv (108 MB, +219 MB), so the
# image leaves it out: its demo then logs one warning and caches exactly (docs/semantic_cache.md). To carry it:
#   docker build --build-arg EXTRAS=fast,redis,semantic -t agent-proxy .
ARG EXTRAS=fast,redis
RUN python -m venv /opt/agent-proxy \
 && /opt/agent-proxy/bin/pip install --no-cache-dir --constraint constraints.txt ".[${EXTRAS}]" \
 && /opt/agent-proxy/bin/python -I -c "from proxy.accounting.tokens import get_encoding as g; assert g('o200k_base') and g('cl100k_base')"

FROM python:3.11-slim
# A numeric user, so Kubernetes' runAsNonRoot can verify it; it owns nothing but the ledger directory.
RUN groupadd --system --gid 10001 agent-proxy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin agent-proxy \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/agent-proxy
# The venv holds the package and its data (the token encodings in proxy/data, checked above).
COPY --from=build /opt/agent-proxy /opt/agent-proxy
COPY policies /etc/agent-proxy
ENV PATH=/opt/agent-proxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/agent-proxy
VOLUME ["/var/lib/agent-proxy"]
USER 10001:10001
EXPOSE 8080
# SIGTERM drains in-flight requests for server.shutdown_timeout_s (default 30 s), then exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
ENTRYPOINT ["agent-proxy"]
CMD ["serve", "--policy", "/etc/agent-proxy/demo.yaml", "--host", "0.0.0.0", "--port", "8080"]
