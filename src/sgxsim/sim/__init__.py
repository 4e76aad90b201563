"""Simulation: clock, deterministic scheduler, scenarios, exploration, reports."""
