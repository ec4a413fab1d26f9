"""The read path: the HTTP API's models and service, and scoring the catalogue against a user."""
