"""hbt: hybrid batch training for multilingual dense retrieval, on Ray."""

__version__ = "0.1.0"
