"""Pure functions over GGUF metadata: what a model is, and (later) how much memory it needs."""
