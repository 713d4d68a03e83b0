"""Training: run directories and resume (``runs.py``), devices and DDP (``runtime.py``), the objectives of
stages I and II (``loss.py``), and one training loop per stage (``stage1.py``, ``pose_ae.py``, ``stage2.py``)."""
