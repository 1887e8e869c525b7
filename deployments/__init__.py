"""Deployment helpers for the flows declared in prefect.yaml."""
