"""The core a user copies into a pipeline: each module standalone (see `mmkit/__init__.py`)."""
