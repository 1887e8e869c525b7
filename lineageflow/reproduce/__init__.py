"""Rebuilding a past run and comparing two runs."""
