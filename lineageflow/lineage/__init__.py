"""Lineage: the record, the declared checks and their evidence, code state, reports."""
