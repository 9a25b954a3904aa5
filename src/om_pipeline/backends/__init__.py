"""In-process inference backends."""
