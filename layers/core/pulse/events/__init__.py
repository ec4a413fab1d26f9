"""Behaviour events: the contract, Kinesis records, the dead-letter queue and the archive."""
