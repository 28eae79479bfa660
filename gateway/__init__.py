"""Gateway: the public HTTP + WebSocket API (issue 3)."""
