"""pgrecs: recommendations inside PostgreSQL, on pgvector."""

from __future__ import annotations

from pgrecs.client import Client, Explanation, Recommendation, SimilarItem, connect
from pgrecs.embed import Embedder, EmbedReport, SentenceTransformerEmbedder
from pgrecs.errors import (
    ConfigurationError,
    DatabaseError,
    DimensionMismatch,
    ImportFileError,
    IntegrityError,
    InvalidParameter,
    ModelMismatch,
    NotEmbedded,
    PermissionDenied,
    PgrecsError,
    PgvectorMissing,
    SchemaOutdated,
    UnknownItem,
)
from pgrecs.interactions import Interaction
from pgrecs.items import Item
from pgrecs.users import RefreshReport

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConfigurationError",
    "DatabaseError",
    "DimensionMismatch",
    "EmbedReport",
    "Embedder",
    "Explanation",
    "ImportFileError",
    "IntegrityError",
    "Interaction",
    "InvalidParameter",
    "Item",
    "ModelMismatch",
    "NotEmbedded",
    "PermissionDenied",
    "PgrecsError",
    "PgvectorMissing",
    "Recommendation",
    "RefreshReport",
    "SchemaOutdated",
    "SentenceTransformerEmbedder",
    "SimilarItem",
    "UnknownItem",
    "connect",
]
