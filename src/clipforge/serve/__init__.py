"""HTTP service over a search index: JSON API, OpenAPI docs and a web page (FastAPI)."""

from .app import ServeConfig, create_app
from .batching import TextBatcher
from .runner import run

__all__ = ["ServeConfig", "TextBatcher", "create_app", "run"]
