__version__ = "0.1.0"

# Compiled builds of the hot modules, when built from this very source (service/native.py).
import os as _os

from service import native as _native

_native.install(_os.environ)
