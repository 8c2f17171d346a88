"""The stateful load balancer: per request, filter → policy → pick, with queueing and backpressure."""
