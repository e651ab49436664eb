"""Readers, canonical schemas, splits and the hybrid batch composer."""
