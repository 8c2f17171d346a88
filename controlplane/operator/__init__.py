"""Kubernetes: `Model` custom resources as desired state, status written back, Lease leader election.

The only package that imports the `kubernetes` client (`.importlinter` enforces it).
"""
