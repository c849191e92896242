"""SQL files: schemas, numbered migrations and named statements, read once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _text(dialect: str, *parts: str) -> str:
    return resources.files(__package__).joinpath(dialect, *parts).read_text(encoding="utf-8")


@cache
def queries(dialect: str) -> dict[str, str]:
    """The named blocks of ``<dialect>/queries.sql``."""
    chunks = _NAME.split(_text(dialect, "queries.sql"))
    return {name: body.strip() for name, body in zip(chunks[1::2], chunks[2::2], strict=True)}


def schema(dialect: str) -> str:
    return _text(dialect, "schema.sql")


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    folder = resources.files(__package__).joinpath(dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return tuple(sorted(found, key=lambda m: m.version))
