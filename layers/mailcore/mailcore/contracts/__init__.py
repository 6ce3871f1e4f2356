"""Wire contracts: the pydantic models of what callers send and receive."""
