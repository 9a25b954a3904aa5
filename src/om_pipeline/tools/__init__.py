"""The one subprocess seam (execute) and the parsers of the Ascend tools."""
