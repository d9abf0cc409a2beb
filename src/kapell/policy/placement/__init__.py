"""Pure placement decisions: inventory, requests, fit, policies, gangs, preemption, MIG."""
