"""Model files: resolving a model source to a local GGUF path (downloads and eviction come later)."""
