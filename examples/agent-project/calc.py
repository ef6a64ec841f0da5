"""A tiny project for examples/agent-review.yaml: an agent is asked to change it."""


def add(a, b):
    return a + b
