"""Versioned data: the data-source seam, DVC files, tables and synthetic data."""
