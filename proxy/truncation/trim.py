"""Which messages to keep under a token budget: protocol-neutral, on the turns an adapter drew.

The newest turns are kept and the oldest dropped, whole turns only, until what is left fits;
the first turn kept must be one that may lead. Pinned messages (system, developer) and the
fixed cost (reply priming, a separate system prompt, tool definitions) are always kept.
When even the newest turn that may lead does not fit beside them, nothing is cut: the
request is too long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.protocols.conversation import Conversation


@dataclass(frozen=True, slots=True)
class Cut:
    """What trimming decided. `keep` is None when nothing is cut (the prompt fits, or cannot be made to)."""

    keep: list[int] | None
    fits: bool
    tokens_before: int
    tokens_after: int
    dropped_messages: int

    @property
    def tokens_cut(self) -> int:
        return self.tokens_before - self.tokens_after


def trim(conversation: Conversation, message_tokens: Sequence[int], fixed: int, budget: int) -> Cut:
    """`message_tokens[i]` is message i's count with its framing; `fixed` the rest of the prompt."""
    base = fixed + sum(message_tokens[i] for i in conversation.pinned)
    turns = conversation.turns
    sizes = [sum(message_tokens[i] for i in turn.indices) for turn in turns]
    total = base + sum(sizes)
    if total <= budget:
        return Cut(None, True, total, total, 0)
    # Walk back from the newest turn; remember the oldest start that may lead and still fits.
    kept, start = base, None
    for position in range(len(turns) - 1, -1, -1):
        kept += sizes[position]
        if kept > budget:
            break
        if turns[position].leads:
            start = position
    if start is None:
        return Cut(None, False, total, total, 0)
    keep = sorted([*conversation.pinned, *(i for turn in turns[start:] for i in turn.indices)])
    after = base + sum(sizes[start:])
    dropped = sum(len(turn.indices) for turn in turns[:start])
    return Cut(keep, True, total, after, dropped)
