"""The networks of the paper (Sec. 3), their model configs and ``build_*`` factories."""
