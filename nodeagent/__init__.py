"""The node agent: hardware, model files, and the engine processes it supervises on one node."""
