"""The embedded local stack (DESIGN.md, contract 3): AWS APIs from moto's server, resources from template.yaml."""
