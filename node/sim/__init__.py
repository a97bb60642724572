"""Simulated federations: nodes stepped in one process (`simulate`), node daemons on anvil
(`federation`), the attacks they can play, and the robustness experiment."""
