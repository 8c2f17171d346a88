"""The engine process: one model replica behind an OpenAI-style HTTP surface (run as `python -m nodeagent.engine`)."""
