"""Content safety: PII and secret detectors, exact streaming redaction, prompt pseudonymisation, input checks."""
