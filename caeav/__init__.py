"""caeav: CAE-AV from paper to edge device.

Importing `caeav` is cheap and torch-free; the model, trainer and exporter import torch when they are used.
"""

__version__ = "0.1.0"
