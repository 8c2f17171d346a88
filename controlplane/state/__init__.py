"""The cluster view: nodes, desired models, replicas, placements; one writer, snapshots for readers."""
