"""Slots of the per-view uniform vector: which op reads which uniforms.

Every view consumes one vector of ``NUM_UNIFORMS`` uniforms in [0, 1); each
op reads its own fixed slots, so the ops are independent (same uniforms ⇒
bit-identical view) and changing one op never reshuffles the randomness of
the others.
"""

AREA = slice(0, 10)  # Random resized crop: 10 attempts (area, ratio).
RATIO = slice(10, 20)
TOP, LEFT = 20, 21
FLIP = 22
JITTER = 23
ORDER = slice(24, 28)  # Colour jitter: random order of the four ops.
BRIGHT, CONTRAST, SAT, HUE = 28, 29, 30, 31
GRAY = 32
BLUR, SIGMA = 33, 34
SOLARIZE = 35
NUM_UNIFORMS = 36
# Saliency masking draws its own pair: (apply?, grey level).
NUM_SALIENCY_UNIFORMS = 2
