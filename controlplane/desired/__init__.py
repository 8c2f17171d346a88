"""Sources of desired state: a local models file (Kubernetes `Model` resources: controlplane/operator)."""
