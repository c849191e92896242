"""The OpenAPI document with the registered tasks (``underway.web.openapi.with_tasks``): one
variant of each request per task, whose argument schemas' ``$defs`` become components."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel

import underway
from underway.web import create_app
from underway.web.openapi import with_tasks


class Size(Enum):
    SMALL = "small"
    LARGE = "large"


class Box(BaseModel):
    size: Size
    label: str = ""


def document_of(app: underway.App) -> dict[str, Any]:
    return with_tasks(create_app(app).openapi(), app.tasks)


def test_nested_definitions_become_components_and_every_reference_resolves() -> None:
    app = underway.App("sqlite:///:memory:")

    @app.task(name="pack")
    async def pack(box: Box, sizes: list[Size]) -> None: ...

    document = document_of(app)
    schemas = document["components"]["schemas"]
    assert {"SubmitRequest.pack.Box", "SubmitRequest.pack.Size", "BatchRequest.pack.Size"} <= set(schemas)
    assert schemas["SubmitRequest.pack"]["properties"]["task"] == {
        "type": "string",
        "const": "pack",
        "title": "Task",
    }
    assert schemas["SubmitRequest"]["discriminator"]["mapping"] == {
        "pack": "#/components/schemas/SubmitRequest.pack"
    }
    unresolved = [ref for ref in refs(document) if ref.removeprefix("#/components/schemas/") not in schemas]
    assert unresolved == []
    assert not any(ref.startswith("#/$defs/") for ref in refs(document))


def test_without_tasks_the_document_is_left_as_it_is() -> None:
    app = underway.App("sqlite:///:memory:")
    document = create_app(app).openapi()
    assert with_tasks(document, app.tasks) is document
    assert "oneOf" not in document["components"]["schemas"]["SubmitRequest"]


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [ref for item in value.values() for ref in refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in refs(item)]
    return []
