"""llama.cpp's RPC backend: the worker process that hosts a layer range, and the head's device layout."""
