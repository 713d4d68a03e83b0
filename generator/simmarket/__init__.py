"""SimMarket: a procedural Market-1501-format dataset with known factors.

Every image is ``render(identity, pose, background)``: an identity is a set of appearance parameters
(clothing colours and patterns, build, hair, bag, hat; ``identity.py``), a pose is 18 COCO joints plus an
optional occluder (``body.py``), and a background is a camera-specific template with that camera's lighting
(``world.py``). Because the three are independent inputs, SimMarket can render the *counterfactual* image
(identity A in the pose of B on the background of C; ``render.py``) that measures factor swapping (Sec. 3.1 of
the paper is what the swaps test). ``plan.py`` plans the Market-1501-format dataset, ``simulate.py`` writes and
reads it.
"""
