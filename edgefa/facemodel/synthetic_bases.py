"""Placeholder."""
import numpy as np

EXPRESSIONS = ("mouth_open", "smile", "brow_raise", "brow_furrow", "eyes_close", "pucker",
               "jaw_shift", "upper_lip_raise", "smile_asym", "wink")


def build_bases(verts, front, part, extras, seed):
    n = len(verts)
    return np.zeros((3 * n, 40), np.float32), np.zeros((3 * n, 10), np.float32)
