"""Internal gRPC contracts between gateway, control plane and host nodes (issue 3)."""
