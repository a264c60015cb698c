"""Resilient forwarding: circuit breakers, backoff, endpoint balancing, degraded replies."""
