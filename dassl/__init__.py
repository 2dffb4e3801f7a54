"""A self-contained implementation of the Dassl.pytorch API used by CoOp / MaPLe style trainers.

Module paths match upstream Dassl so that trainer files written for it import unchanged and
pickled objects from existing runs (few-shot ``Datum`` caches) unpickle.
"""

__version__ = "0.6.3"
