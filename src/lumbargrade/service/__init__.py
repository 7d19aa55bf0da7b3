"""Long-running services around the analysis, one module or package each (e.g. :mod:`.review`)."""
