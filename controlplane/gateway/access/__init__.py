"""Who may call the gateway: API keys (hashed, scoped to models and admin routes) and their quotas."""
