"""Small statistics helpers (the demo trace types a new function into this file)."""

import math


def variance(values):
    """Population variance of a non-empty sequence."""
    centre = sum(values) / len(values)
    return sum((v - centre) ** 2 for v in values) / len(values)


def stdev(values):
    return math.sqrt(variance(values))


if __name__ == "__main__":
    print(stdev([1.0, 2.0, 4.0]))
