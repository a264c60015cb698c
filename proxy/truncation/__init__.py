"""Prompt truncation: conversations trimmed to a token budget, oldest turns first, always valid."""
