"""Evaluation metrics (same definitions as CLIP_benchmark)."""

from .retrieval import retrieval_recall

__all__ = ["retrieval_recall"]
