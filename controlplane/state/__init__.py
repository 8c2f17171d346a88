"""The cluster view: nodes, desired models, replicas and their placements; one writer, snapshots for readers."""
