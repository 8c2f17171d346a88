"""The control plane: desired models, placement, the agents' streams, the cluster API and the gateway."""
