"""Peers' own test suites and clients run against asyncgw (nox sessions)."""
