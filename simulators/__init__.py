"""Simulated devices that speak the real protocols, shared by the demo and the tests."""
