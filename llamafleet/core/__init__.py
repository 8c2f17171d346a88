"""What every llamafleet process shares: errors, lifecycle, logging, settings plumbing, API schemas."""
