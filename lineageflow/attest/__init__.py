"""Signed promotions: the model's files and its lineage, checks and transitions,
signed at promotion and verified before the model is loaded."""
