"""The fleet: many rigs sharing one Redis (docs/fleet.md)."""
