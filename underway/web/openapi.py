"""The OpenAPI document with the registered tasks in it.

FastAPI describes a submission's ``task`` as any string and its ``args`` as any object: true of
the route, but it tells a reader (or a fuzzer, or a client generator) nothing of what this
server runs. :func:`with_tasks` makes ``SubmitRequest`` and ``BatchRequest`` a ``oneOf`` with
one variant per registered task, whose ``task`` is that name and whose ``args`` (or ``items``)
follow that task's argument schema, so that a request built from the document is one the server
accepts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ..tasks import Task

#: The request bodies that name a task, and the property that holds its arguments.
REQUESTS = {"SubmitRequest": "args", "BatchRequest": "items"}


def with_tasks(document: dict[str, Any], tasks: Mapping[str, Task[..., Any]]) -> dict[str, Any]:
    """A copy of ``document`` whose submissions name one of ``tasks`` with its arguments."""
    if not tasks:
        return document
    found = copy.deepcopy(document)
    schemas: dict[str, Any] = found.get("components", {}).get("schemas", {})
    for request, holder in REQUESTS.items():
        base = schemas.get(request)
        if base is None:
            continue
        variants: dict[str, str] = {}
        for name, task in sorted(tasks.items()):
            key = f"{request}.{_component_name(name)}"
            schemas[key] = _variant(base, holder, name, _arguments(task.schema, schemas, key))
            variants[name] = f"#/components/schemas/{key}"
        schemas[request] = {
            "title": base.get("title", request),
            "description": "one variant per registered task: its name and its arguments",
            "oneOf": [{"$ref": ref} for ref in variants.values()],
            "discriminator": {"propertyName": "task", "mapping": variants},
        }
    return found


def _variant(base: dict[str, Any], holder: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    variant = copy.deepcopy(base)
    variant["title"] = f"{base.get('title', 'request')} of {name}"
    properties = variant.setdefault("properties", {})
    properties["task"] = {"type": "string", "const": name, "title": "Task"}
    if holder == "args":
        properties["args"] = {**arguments, "description": f"the arguments of {name}"}
        if arguments.get("required"):  # without them an empty {} is no valid submission
            variant["required"] = sorted({*variant.get("required", ()), "args"})
    else:
        properties["items"] = {**properties["items"], "items": arguments}
    return variant


def _arguments(schema: dict[str, Any], schemas: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A task's argument schema with its ``$defs`` moved among the components (``prefix.Name``)."""
    found = copy.deepcopy(schema)
    for name, definition in found.pop("$defs", {}).items():
        schemas[f"{prefix}.{name}"] = _relinked(definition, prefix)
    relinked: dict[str, Any] = _relinked(found, prefix)
    return relinked


def _relinked(value: Any, prefix: str) -> Any:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            value = {**value, "$ref": f"#/components/schemas/{prefix}.{ref.removeprefix('#/$defs/')}"}
        return {key: _relinked(item, prefix) for key, item in value.items()}
    if isinstance(value, list):
        return [_relinked(item, prefix) for item in value]
    return value


def _component_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
