"""xaibench: a benchmarking and evaluation harness for explanation (XAI) methods
on Transformer video and image models.

Components are discoverable by name through registries::

    from xaibench import methods, metrics, datasets, models
    methods.available()        # ['attention', 'chefer', ..., 'staa']
    methods.create('staa', enhance=True, lam=0.5)
"""

__version__ = "0.1.0"
