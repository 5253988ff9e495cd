"""wardd: a ward daemon watching patients on a continuous blinatumomab infusion."""

__version__ = "0.1.0"
