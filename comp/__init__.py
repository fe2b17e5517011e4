"""comp: from a downloaded image-classification competition to a checked, uploaded submission."""

__version__ = "0.1.0"
