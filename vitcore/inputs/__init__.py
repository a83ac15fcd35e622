"""What is trained: dog_food in its offline forms (the embedded default, image folders, HF caches),
the model presets with their training recipes and weights, the HF caches both are looked up in, and
Fashion-MNIST's product photos by class (`photos`: the stand-in checkpoint's pretraining data).
Depends on nothing else in the suite but `vitcore.files` (the decoded-image cache).
"""

__all__ = ["data", "hub_cache", "model", "photos"]
