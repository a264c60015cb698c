"""Tool traffic: MCP servers and HTTP tools behind the proxy (settings, schemas, per-tool guards)."""
