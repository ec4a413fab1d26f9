"""Learning the item space from the archive, and the gate a new space must pass before it serves."""
