# agent-proxy: a sidecar reverse proxy for LLM and tool traffic.
#   docker build -t agent-proxy .
#   docker run -p 8080:8080 agent-proxy                      # offline demo (built-in mock upstream)
#   docker run -p 8080:8080 -v $PWD/policies:/etc/agent-proxy -e OPENAI_API_KEY=... \
#     agent-proxy serve --policy /etc/agent-proxy/default.yaml
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir --prefix=/install '.[fast,redis]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/agent-proxy --create-home agent-proxy
COPY --from=build /install /usr/local
COPY policies /etc/agent-proxy
WORKDIR /var/lib/agent-proxy
USER agent-proxy
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["agent-proxy"]
CMD ["serve", "--policy", "/etc/agent-proxy/demo.yaml", "--host", "0.0.0.0", "--port", "8080"]
