"""The memory model: how much RAM and VRAM llama.cpp will allocate for a model, from its header alone.

Pure functions shared by the node agent (which reads GGUF files into a ``ModelProfile``), the
control plane (which estimates for nodes that do not hold the file) and ``llamafleet fit``.
"""
