"""The gRPC servicer the node agents connect to; proto ⇄ domain conversion lives in convert.py."""
