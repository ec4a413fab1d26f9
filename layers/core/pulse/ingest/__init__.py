"""The write path: a batch of stream records becomes decayed interest, exactly once."""
