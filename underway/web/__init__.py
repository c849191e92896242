"""The HTTP API: REST, long polling, Server-Sent Events and WebSocket."""

from .api import API
from .server import Server, create_app, serve

__all__ = ["API", "Server", "create_app", "serve"]
