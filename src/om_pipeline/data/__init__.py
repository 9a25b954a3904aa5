"""Datasets ompipe can make itself (for offline runs, demos and tests)."""
