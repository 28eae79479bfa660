"""Control plane: databases, names, owners, placement (issue 3)."""
