"""End-to-end tests: the local stack and mailctl as processes, the way an operator runs them."""
