"""The runtime SQL statements, one file each; loaded by kongtaskd.queries."""
