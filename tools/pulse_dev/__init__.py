"""Pulse's developer package: the embedded local stack, the `pulse` CLI, demo, evaluation, benchmarks, soak,
the encoder build and mutation testing. It runs on a developer's machine or in CI, never in Lambda: no layer in
template.yaml ships it (the deployed package is `pulse`, in layers/core; docs/architecture.md has the map)."""
