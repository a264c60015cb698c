"""Rate limits, concurrency caps, spend budgets and agent runs (stages in proxy/stages/ratelimit.py, runs.py)."""
