"""Thin HTTP routers, one module per API area; the work happens in the proxy and the routing view."""
