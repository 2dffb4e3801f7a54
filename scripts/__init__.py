"""Protocol scripts: the shared implementation behind scripts/<trainer>/*.sh (see protocols.py)."""
