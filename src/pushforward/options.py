"""Generic option checks shared by every folder: did-you-mean hints."""

from __future__ import annotations

import difflib


def closest(word: str, choices: list[str]) -> str:
    """A ``did you mean`` hint naming the closest of ``choices``, or an empty string."""
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in near)}?)" if near else ""
