"""Caller identity: HMAC-signed API keys, JWTs, static keys, permissions and outbound request signing.

One concern per module; `proxy/stages/auth.py` combines the verifiers into the auth stage.
"""
