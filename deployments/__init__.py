"""Deployments of lineageflow's flows.

`prefect.yaml` (project root) declares them for a work pool and `prefect deploy`;
`deployments.serve` builds the same three from code and serves them from one
process, for a machine without a work pool or worker.
"""
