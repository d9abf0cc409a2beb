"""Spot versus on-demand under a deadline: the online policies, their replay and the optimum.

The setting of Wu et al., "Can't Be Late: Optimizing Spot Instance Savings under Deadlines"
(NSDI 2024): a job of fixed length may run on spot capacity (cheap, can vanish) or on-demand
capacity (about 3x the price, always there), must finish by its deadline, and pays a restart
overhead every time it (re)starts on a new instance.
"""
