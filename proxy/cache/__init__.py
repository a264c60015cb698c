"""The response cache: exact keys over the canonical request, memory or Redis entries, coalesced misses.

The stage is proxy/stages/cache.py; the semantic index (near-identical questions) is
proxy/cache/semantic.py, reached only through `SemanticIndex`.
"""
