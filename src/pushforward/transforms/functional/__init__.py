"""transforms/functional."""
