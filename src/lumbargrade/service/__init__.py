"""Long-running services around the analysis: the review web app (:mod:`.review`)."""
