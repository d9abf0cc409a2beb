"""Pure decisions: placement, autoscaling, routing, carbon, energy. No I/O, no wall clock."""
