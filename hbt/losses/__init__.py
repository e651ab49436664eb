"""Contrastive losses on embeddings (in-batch negatives InfoNCE, optional hard negatives and cross-rank gathering)."""
