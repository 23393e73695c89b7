"""The run every action shares: targets, resume, errors, label writes, run records, class maps, the embedding store, the loader thread."""
