"""Distillery: distil a large teacher LLM into a small, fast student, on Kubernetes or on one machine."""

__version__ = "0.1.0"
