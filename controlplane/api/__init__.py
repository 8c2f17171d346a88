"""ClusterService, the read API: route watch for gateways, node and model views for the CLI."""
