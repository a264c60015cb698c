"""agent-proxy: a sidecar reverse proxy for LLM and tool traffic."""

__version__ = "0.1.0"
