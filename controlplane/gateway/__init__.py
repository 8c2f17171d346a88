"""The OpenAI-style gateway: auth, balancer, proxying to engines, streaming, errors, metrics."""
