"""The interest model (time-decayed vectors per user and time scale) and where it is stored."""
