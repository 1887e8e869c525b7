"""The registry: versions and their lineage tags, the gate, the promotion decision."""
