"""The mail domain: life cycles, records, ids and time. Knows nothing of Lambda or Redis."""
