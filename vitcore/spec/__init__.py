"""What a run and a point are: the plugin registry (`plugins`: the entries, registering on import; `registry`: its API),
`RunConfig` and the profiles (`config`), the point schema with its identity and gated fields
(`points`), the device and software identity (`env`) and the correctness tolerances (`checks`).
Every later group reads these; they read only `vitcore.inputs`.
"""

__all__ = ["checks", "config", "env", "plugins", "registry", "points"]
