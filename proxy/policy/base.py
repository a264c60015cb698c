"""What every part of the policy shares: the strict base model, stage modes and name patterns.

Each component declares its own settings next to its code (proxy/auth/config.py,
proxy/forward/config.py, proxy/limits/config.py, proxy/safety/config.py);
proxy/policy/schema.py assembles them into the `Policy`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["enforce", "shadow", "off"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Glob = Annotated[str, Field(min_length=1, max_length=256)]


class Strict(BaseModel):
    """Frozen, and unknown keys are errors: a typo in a policy never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
