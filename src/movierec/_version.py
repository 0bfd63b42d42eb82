"""movierec's version, in a module of its own: any part of the package can read it without
importing the package's ``__init__`` (which reaches up to the Python API, :mod:`movierec.service`)."""

__version__ = "0.1.0"
