"""Textual-inversion embeddings: their files and the token-table rows they become."""

from engine.embeddings.embedding_file import EMBEDDING_FILE, embedding_layout, read_embedding
from engine.embeddings.record import recorded_embeddings
from engine.embeddings.token_table import EmbeddingSet, embedding_name, prepare_embeddings

__all__ = ["EMBEDDING_FILE", "EmbeddingSet", "embedding_layout", "embedding_name",
           "prepare_embeddings", "read_embedding", "recorded_embeddings"]
