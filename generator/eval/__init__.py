"""Evaluation: image and embedding metrics, PNG grids, and the stage-I / stage-II reports."""
