"""Pulse: real-time interest capture for recommendations (the domain package shared by all functions)."""

__version__ = "0.1.0"
