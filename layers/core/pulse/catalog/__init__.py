"""The item catalogue: immutable versions, how they are built from an upload, and how they are stored and served."""
