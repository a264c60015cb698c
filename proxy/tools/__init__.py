"""Tool traffic: what tools a caller may use, over MCP, plain HTTP and in the calls an LLM proposes
(settings, schemas, per-tool guards)."""
