"""The registry audit: every promoted version re-proved on a schedule
(flows/audit.py): offline checks each time, a rebuild when due, the verdict
on the version, an event when it changes."""
