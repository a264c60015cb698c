"""Telling a chosen secret from what only looks like one: placeholders, masked examples, references to code.

`password = os.environ["DB_PASSWORD"]`, `sk_live_••••`, `YOUR_API_KEY`, `${TOKEN}` and
`<your-password>` stand where a secret would, and must come back intact: a developer needs
them. These checks run on a candidate value after its detector's regex matched.
"""

from __future__ import annotations

import re

# Starts that mark a template, a reference or a masked value: <...>, {{...}}, ${...}, $VAR, %VAR%, [...], *..., (...),
# !vault (a YAML tag), ?... (a shell default), &str (a type), ...
_PLACEHOLDER_START = re.compile(r"^(?:[<{$%\[*(!?&]|\.\.\.|-----)")
_PLACEHOLDER_WORDS = re.compile(
    r"your|example|placeholder|replace|changeme|change_me|dummy|sample|redacted|here|xxxx|XXXX|\*\*\*|•|\.\.\.|…|<|>",
    re.IGNORECASE,
)
_PLAIN_WORDS = frozenset(
    {"null", "none", "nil", "true", "false", "password", "passwd", "secret", "token", "pass", "test", "string", "str"}
)
# os.environ[, process.env.X, getpass.getpass(, std::env::var(, settings.DB_PASSWORD: code, not a value.
_REFERENCE = re.compile(r"^[A-Za-z_$][\w$]*(?:(?:\.|::)[A-Za-z_$][\w$]*)*(?:[\[(]|$)")
_DOTTED = re.compile(r"[.:]")
_CAMEL = re.compile(r"[a-z][A-Z]")
_MASKED = re.compile(r"^(.)\1{5,}$|[xX*•]{6,}")


def placeholder(value: str) -> bool:
    """A template, an example or a masked value rather than a secret."""
    return bool(
        _PLACEHOLDER_START.search(value)
        or _PLACEHOLDER_WORDS.search(value)
        or _MASKED.search(value)
        or value.lower() in _PLAIN_WORDS
        or len(set(value)) < 3
    )


def reference(value: str) -> bool:
    """An expression that reads the secret from somewhere (a variable, an attribute, a call, an index)."""
    match = _REFERENCE.match(value)
    if match is None:
        return False
    # A plain word is a reference only if it is an attribute path or a call; `hunter2` is not code.
    return bool(_DOTTED.search(value) or value.endswith(("[", "(")))


def chosen(value: str) -> bool:
    """After `password:`-like keys: anything but a placeholder, a reference, a short plain word or an identifier."""
    if placeholder(value) or reference(value):
        return False
    letters_only = value.replace("-", "").replace("_", "").isalpha()
    return not (letters_only and (len(value) < 12 or _CAMEL.search(value) or "-" in value or "_" in value))


def random_looking(value: str) -> bool:
    """Without `=` or `:` (prose, command lines), only values that mix letters with digits or symbols."""
    if len(value) < 6 or not chosen(value):
        return False
    letters = any(c.isalpha() for c in value)
    others = any(not c.isalpha() for c in value)
    return letters and others and not value.startswith(("/", "~", "-"))


def strong(value: str) -> bool:
    """After a bare command-line flag (`-a X`, `-pX`), which also takes patterns and plugin names: three of
    lower case, upper case, digits and symbols."""
    if not random_looking(value):
        return False
    kinds = (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    return sum(any(kind(c) for c in value) for kind in kinds) >= 3
