"""Dataset makers: each writes an identity-labelled image folder (Market-1501 or MSMT17 layout) with a manifest.

- ``builder``: the Virtual Market (remixes of real identities and new sampled identities) and its exports.
- ``cutpaste``: real people pasted over another camera's image, a generated plate, or both (the hybrids).
"""
