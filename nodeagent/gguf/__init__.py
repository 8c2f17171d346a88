"""The GGUF reader: a model file's header (metadata, tensor table, shards) read into model facts;
no memory arithmetic (that is llamafleet.fit)."""
