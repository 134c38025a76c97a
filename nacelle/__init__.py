"""Nacelle's application shell: the `nacelle` command, typed daemon configuration, logging and
the helpers that start and stop local service processes. The tiers live in their own packages
(`edge_node`, `regional_aggregator`, `cloud_core`), the wire contract in `wire`, the learning
math in `learning`."""

__version__ = "0.1.0"
