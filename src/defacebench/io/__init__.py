"""Input and output: NIfTI images, BIDS trees, atomic writes, project errors."""
