"""The `llamafleet` command: one subcommand per process (up, controlplane, gateway, agent) plus inspection."""
