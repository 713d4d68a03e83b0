"""Realistic keypoints for metric tests: SimMarket's walking poses."""
import numpy as np


def standing_poses(n: int, seed: int = 0) -> np.ndarray:
    from generator.simmarket.body import sample_pose

    rng = np.random.default_rng(seed)
    return np.stack([sample_pose(rng, 128, 64, occlusion_p=0, truncation_p=0).rcv() for _ in range(n)])
