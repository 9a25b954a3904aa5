"""Our own diffs against the pinned upstream commits. Packaged as om_pipeline.patches."""
