"""Model plugins: one module per model (see om_pipeline.plugin for the interface)."""
