"""Simulator: the policy core driving modelled engines."""
