"""Protection methods and the mirrored, resumable runner that applies them to a dataset."""
