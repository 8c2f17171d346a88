"""The engine process: one model replica behind OpenAI-style HTTP (`python -m nodeagent.engine`)."""
