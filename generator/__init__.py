"""Virtual Market generator: data formats, pose geometry, SimMarket and (later) the disentangled networks."""
