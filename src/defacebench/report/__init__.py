"""The self-contained HTML report of a study (:mod:`.html`)."""
