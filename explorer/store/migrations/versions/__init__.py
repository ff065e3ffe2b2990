"""One file per schema revision, ``vNNNN_<what>.py``; NNNN is the schema version it makes."""
