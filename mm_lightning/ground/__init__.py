"""The ground layer: what every other layer may rely on, importing nothing of mm_lightning.

The run contract (the ``RunModule`` protocol), every private Lightning/mmengine/torch name (``internals``),
the light name lists (``names``) and helpers over mmengine's parts (``parts``).
"""
