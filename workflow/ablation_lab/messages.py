"""Bounded text for one-line errors: a message never echoes an unbounded value.

A 50 MB study name, a key list of 100,000 feature names or a YAML alias expanded to millions
of entries must not become a 50 MB error line (nor take minutes to format): every value a
message quotes goes through `brief`, every list it enumerates through `listing`.
"""

from __future__ import annotations

import reprlib
import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_QUOTED = 80  # characters of a quoted value
MAX_LISTED = 12  # entries of an enumerated list

_REPR = reprlib.Repr()
_REPR.maxstring = MAX_QUOTED
_REPR.maxother = MAX_QUOTED
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def brief(value: Any) -> str:
    """`repr(value)`, cut to about MAX_QUOTED characters; never walks more than a few entries."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_QUOTED + 10 else text[:MAX_QUOTED] + "..."


def listing(items: Iterable[Any], limit: int = MAX_LISTED, quote: bool = False) -> str:
    """`a, b, c, ... (1000 in all)`: the first `limit` entries of a possibly huge collection."""
    shown, total = [], 0
    for total, item in enumerate(items, 1):
        if total <= limit:
            shown.append(_plain(item) if isinstance(item, str) and not quote else brief(item))
    more = f", ... ({total} in all)" if total > limit else ""
    return ", ".join(shown) + more


def _plain(text: str) -> str:
    """The text as written, cut; quoted (`repr`) when it holds a tab, a line break or another unprintable character,
    which would otherwise reach the one-line message raw."""
    if not text.isprintable():
        return brief(text)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."


def non_ascii_characters(text: str) -> str:
    """`U+043E CYRILLIC SMALL LETTER O at position 4`: what makes a key differ from a look-alike."""
    found = [
        f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')} at position {index + 1}"
        for index, char in enumerate(text[:MAX_QUOTED])
        if not char.isascii() or not char.isprintable()
    ]
    return ", ".join(found[:4]) + (" and more" if len(found) > 4 else "")
