"""The embedded local stack (README, "The local runtime"): AWS APIs from moto's server, resources from template.yaml."""
