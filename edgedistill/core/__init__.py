"""The engine: the runner, the content-addressed store, strict config loading, registries, errors."""
