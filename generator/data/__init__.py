"""Data formats: the Market-1501 layout (``market.py``), keypoint annotations (``keypoints.py``) and the person
dataset the networks train on (``dataset.py``)."""
