"""The request dialects the gateway and the engine speak, one module each: OpenAI (openai.py),
llama-server's own API (native.py), rerank (rerank.py), OpenAI's Responses API (responses.py) and
Anthropic's Messages API (messages.py). Each owns its request schema, its translation to the engine's
chat or completion requests, its pure answer builders, how its answers say what they used, and its
endpoint table (endpoint.py); endpoints.py gathers the tables, aliases.py llama-server's other paths."""
