"""Training the models of a world from scratch (used by ``scripts/pretrain.py``)."""
