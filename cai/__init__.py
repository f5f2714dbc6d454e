"""cai: Constitutional AI data generation and training toolkit."""

__version__ = "0.1.0"
