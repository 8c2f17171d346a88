"""Sources of desired state: a local models file here; Kubernetes `Model` resources in controlplane/operator."""
