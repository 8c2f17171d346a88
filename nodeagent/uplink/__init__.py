"""The agent's gRPC stream to the control plane: Hello, Status, and applying Assign/Unassign."""
