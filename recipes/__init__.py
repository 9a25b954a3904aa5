"""Recipes shipped with ompipe (one YAML file per model). Packaged as om_pipeline.recipes."""
