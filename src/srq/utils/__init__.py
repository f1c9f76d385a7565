"""Helpers with no srq dependencies, usable from every layer: progress display and memory release."""
