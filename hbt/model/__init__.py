"""Base-model import: turn an offline-shipped encoder into a transformers/sentence-transformers model dir."""
