"""Application services: one use case each, free of Lambda and of Redis details."""
