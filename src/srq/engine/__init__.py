"""Evaluation runner."""
