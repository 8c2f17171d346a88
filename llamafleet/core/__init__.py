"""What every llamafleet process shares that is neither HTTP, security nor units: the error vocabulary,
lifecycle and logging, settings plumbing, gRPC channel options, and the serving rules both sides count
by (threads, chat templates, request defaults)."""
