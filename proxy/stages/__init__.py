"""Stages, in the one order the proxy runs them.

Request hooks run top to bottom, response hooks bottom to top:
auth, input checks, rate limit and budget, truncation, cache, tool governance,
redaction, usage. A policy configures stages; it never reorders them.
"""
