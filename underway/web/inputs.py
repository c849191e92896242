"""What the API takes in as JSON, and in paths and queries: checked before anything reaches a
store, so that bad input is a client's error (422) on every store, never a server fault.

Python's ``json`` accepts what JSON does not (``NaN``, ``Infinity``) and what no store can keep
(``1e400`` becomes infinity; ``"\\u0000"`` and lone surrogates such as ``"\\ud800"`` are text
that PostgreSQL refuses and that cannot be written as UTF-8); a body nested thousands deep
exhausts its recursion. :func:`loads` refuses all of these with :class:`BadInput`, saying where.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..exceptions import InvalidArguments

#: Characters no stored text may hold: NUL (PostgreSQL refuses it) and lone surrogates (not
#: Unicode text: they have no UTF-8 form).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BadInput(InvalidArguments):
    """Input that is not JSON a store can keep (``invalid_request``, 422); its details are one
    problem, as a request's validation errors are: ``[{"loc", "message", "type"}]``."""

    code = "invalid_request"

    def __init__(
        self, message: str, *, where: str = "body", kind: str = "json_invalid", **extra: Any
    ) -> None:
        problem = {"loc": where.split("."), "message": message, "type": kind, **extra}
        super().__init__(f"invalid request: {where}: {message}", details=[problem])


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def loads(text: str | bytes, where: str = "body") -> Any:
    """``text`` parsed as strict JSON whose strings a store can keep; :class:`BadInput` if not
    (``where`` it came from: ``body``, ``message``)."""
    try:
        value = _DECODER.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=where) from None
    except RecursionError:
        raise BadInput("nested too deep to read: flatten it", where=where) from None
    except ValueError as exc:  # JSONDecodeError, NaN, out-of-range numbers, huge integers
        raise BadInput(f"not valid JSON: {exc}", where=where) from None
    check_text(value, where)
    return value


def check_text(value: Any, where: str) -> None:
    """:class:`BadInput` if a string in ``value`` (keys included) holds an unstorable character."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            _check_string(item, where)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string(key, where)
                if isinstance(child, str | dict | list):
                    pending.append(child)
        elif isinstance(item, list):
            pending.extend(child for child in item if isinstance(child, str | dict | list))


def _check_string(text: str, where: str) -> None:
    found = UNSTORABLE.search(text)
    if found is not None:
        character = f"U+{ord(found.group()):04X}"
        raise BadInput(
            f"a string holds the character {character}, which no stored text may hold (NUL, or"
            " half of a surrogate pair): remove it",
            where=where,
            kind="unstorable_character",
            character=character,
        )
