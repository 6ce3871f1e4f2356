"""The Redis state store: key names, Lua scripts and the adapters over them."""
