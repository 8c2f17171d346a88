"""ClusterService, the control plane's read API: routing-table watch for gateways, node/model views for the CLI."""
