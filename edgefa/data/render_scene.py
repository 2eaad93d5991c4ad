"""The random look and surroundings of a synthetic render: colours, light, clutter, occluders.

Colours here are floats in [0, 1]; the looks (skin, lips, iris, hair...) are RGB, the images BGR.
"""
from __future__ import annotations

import cv2
import numpy as np

# skin albedo from very light to very dark (RGB), sampled along this curve with a little hue jitter
_SKIN = np.array([[0.95, 0.80, 0.70], [0.88, 0.68, 0.56], [0.76, 0.55, 0.40], [0.60, 0.41, 0.29],
                  [0.44, 0.29, 0.20], [0.30, 0.19, 0.13]])
_HAIR = (([0.05, 0.04, 0.035], 0.35), ([0.15, 0.09, 0.06], 0.25), ([0.32, 0.21, 0.12], 0.13),
         ([0.66, 0.53, 0.34], 0.10), ([0.50, 0.22, 0.10], 0.05), ([0.55, 0.54, 0.52], 0.12))
_IRIS = ([0.30, 0.17, 0.08], [0.12, 0.07, 0.04], [0.30, 0.45, 0.60], [0.33, 0.42, 0.28], [0.42, 0.32, 0.16])


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _direction(azimuth, elevation):
    az, el = np.radians(azimuth), np.radians(elevation)
    return np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])


def random_look(rng: np.random.Generator) -> dict:
    """Skin, lips, eyes, hair, light and material choices for one render."""
    t = rng.uniform(0, len(_SKIN) - 1)
    k = min(int(t), len(_SKIN) - 2)
    skin = _SKIN[k] + (t - k) * (_SKIN[k + 1] - _SKIN[k])
    skin = np.clip(skin * rng.uniform(0.92, 1.08) * (1 + rng.normal(0, 0.03, 3)), 0.05, 1)
    hair_choice = rng.choice(len(_HAIR), p=[p for _, p in _HAIR])
    hair = np.clip(np.array(_HAIR[hair_choice][0]) * rng.uniform(0.75, 1.25), 0, 1)
    lips = skin * np.array([0.86, 0.60, 0.60]) * rng.uniform(0.8, 1.0)
    if rng.random() < 0.1:  # lipstick
        lips = np.array([rng.uniform(0.4, 0.8), rng.uniform(0.02, 0.2), rng.uniform(0.05, 0.3)])
    colours = {
        "skin": skin, "lips": lips, "ear": skin * [1.0, 0.93, 0.92], "neck": skin * 0.95,
        "sclera": np.array([0.86, 0.84, 0.80]) * rng.uniform(0.8, 1.0),
        "mouth": np.array([0.22, 0.07, 0.07]) * rng.uniform(0.4, 1.0),
        "teeth": np.array([0.85, 0.82, 0.72]) * rng.uniform(0.75, 1.0),
        "lid": skin * rng.uniform(0.25, 0.45),
    }
    az = rng.uniform(-75, 75)
    light = _direction(az, rng.uniform(-15, 60))
    ambient = rng.uniform(0.25, 0.55)
    warm = rng.normal(0, 0.06)
    return {
        "colours": colours, "hair": hair, "brow": hair * 0.8 + 0.02,
        "brow_strength": rng.uniform(0.55, 1.0),
        "has_hair": float(rng.random() < 0.93), "hairline": rng.uniform(-8, 14),
        "hair_volume": rng.uniform(0, 12), "beard": rng.uniform(0.3, 0.9) if rng.random() < 0.15 else 0.0,
        "iris": np.array(_IRIS[rng.integers(len(_IRIS))]) * rng.uniform(0.7, 1.2),
        "iris_r": rng.uniform(5.0, 6.0), "pupil_r": rng.uniform(1.5, 2.5),
        "gaze": np.array([rng.normal(0, 2.0), rng.normal(0, 1.0)]),
        "mottle": rng.uniform(0.01, 0.05), "cavity_gain": rng.uniform(0.05, 0.15),
        "light_dir": light, "half_dir": _unit(light + [0, 0, 1]),
        "fill_dir": _direction(-az * rng.uniform(0.5, 1.0), rng.uniform(-10, 30)),
        "fill": rng.uniform(0.0, 0.25), "ambient": ambient, "diffuse": rng.uniform(0.9, 1.2) - ambient,
        "light_rgb": np.clip(np.array([1 + warm, 1.0, 1 - warm]) * rng.uniform(0.8, 1.25), 0, 1.5),
        "skin_spec": (rng.uniform(0.02, 0.15), rng.uniform(8, 25)),
        "skin_bgr": skin[::-1],
    }


def paint_eyes(albedo, sclera, eye_uv, look):
    """Iris (with a darker limbal ring) and pupil on the eyeball vertices, looking at ``gaze``."""
    d = np.linalg.norm(eye_uv - look["gaze"], axis=1)
    r_iris, r_pupil = look["iris_r"], look["pupil_r"]
    iris = look["iris"] * (1 - 0.5 * np.clip((d / r_iris - 0.7) / 0.3, 0, 1))[:, None]
    out = albedo.copy()
    in_iris = sclera & (d < r_iris)
    out[in_iris] = iris[in_iris]
    out[sclera & (d < r_pupil)] = 0.02
    return out


_SPEC = {"lips": (0.25, 20.0), "sclera": (0.7, 60.0), "teeth": (0.3, 30.0), "mouth": (0.05, 5.0)}


def vertex_specular(tables, look) -> np.ndarray:
    """(N, 2) specular strength and exponent per vertex."""
    table = np.array([_SPEC.get(name, look["skin_spec"]) for name in tables["names"]])
    spec = table[tables["region"]]
    if "hair" in tables["fields"]:
        hair = tables["fields"]["hair"] > look["hairline"]
        spec[hair] = (0.06, 8.0)
    return spec


def _random_colour(rng):
    colour = rng.uniform(0, 1, 3) ** rng.uniform(0.6, 1.6)
    grey = colour.mean()
    return grey + (colour - grey) * rng.uniform(0.15, 0.9)  # everyday scenes are rarely saturated


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random clutter: a gradient, low-frequency texture, shapes, an optional blur (BGR floats)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    image = _random_colour(rng) * (1 - ramp) + _random_colour(rng) * ramp
    cells = int(rng.integers(2, 12))
    texture = cv2.resize(rng.uniform(-1, 1, (cells, cells, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    image = image + texture * rng.uniform(0, 0.25)
    image = np.ascontiguousarray(image, dtype=np.float32)
    for _ in range(int(rng.integers(0, 14))):
        _draw_shape(image, rng, size, _random_colour(rng))
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 3.0))
    if rng.random() < 0.3:
        image = image + rng.normal(0, rng.uniform(0.02, 0.08), image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


def _draw_shape(image, rng, size, colour):
    kind = rng.integers(5)
    centre = rng.uniform(-0.1, 1.1, 2) * size
    radius = rng.uniform(0.05, 0.5) * size
    colour = tuple(float(c) for c in colour)
    if kind == 0:
        box = ((float(centre[0]), float(centre[1])), (float(radius * 2), float(radius * rng.uniform(0.2, 2))),
               float(rng.uniform(0, 180)))
        cv2.fillConvexPoly(image, cv2.boxPoints(box).astype(np.int32), colour, cv2.LINE_AA)
    elif kind == 1:
        cv2.circle(image, tuple(int(c) for c in centre), int(radius), colour, -1, cv2.LINE_AA)
    elif kind == 2:
        axes = (int(radius), int(radius * rng.uniform(0.2, 1)))
        cv2.ellipse(image, tuple(int(c) for c in centre), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1,
                    cv2.LINE_AA)
    elif kind == 3:
        end = centre + rng.normal(0, size * 0.5, 2)
        cv2.line(image, tuple(int(c) for c in centre), tuple(int(c) for c in end), colour,
                 int(rng.integers(1, max(2, size // 20))), cv2.LINE_AA)
    else:
        pts = (centre + rng.normal(0, radius, (int(rng.integers(3, 7)), 2))).astype(np.int32)
        cv2.fillPoly(image, [pts], colour, cv2.LINE_AA)


def draw_shoulders(image, rng, crop, tables, ss, look):
    """Clothing below the neck (behind the head), when the pose brings it into the crop."""
    neck = tables["neck_tri"]
    if not neck.any() or rng.random() < 0.2:
        return
    neck_pts = crop[np.unique(tables["tris"][neck])][:, :2] * ss
    bottom = neck_pts[np.argmax(neck_pts[:, 1])]
    width = (neck_pts[:, 0].max() - neck_pts[:, 0].min()) * rng.uniform(2.5, 3.5)
    colour = tuple(float(c) for c in _random_colour(rng))
    centre = (int(bottom[0]), int(bottom[1] + width * 0.15))
    cv2.ellipse(image, centre, (int(width / 2), int(width * 0.35)), 0, 180, 360, colour, -1, cv2.LINE_AA)


def draw_occluders(image, rng, landmarks, occlusion, look):
    """Objects in front of the face (probability ``occlusion``): blobs, boxes, hands, glasses, masks."""
    if rng.random() >= occlusion:
        return
    lo, hi = landmarks.min(0), landmarks.max(0)
    face = float(max(hi - lo))
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.choice(["blob", "box", "hand", "glasses", "mask", "strands"], p=[.25, .2, .2, .12, .1, .13])
        colour = _random_colour(rng)
        if kind == "hand":
            colour = np.clip(look["skin_bgr"] * rng.uniform(0.7, 1.2), 0, 1)
        anchor = landmarks[rng.integers(len(landmarks))] + rng.normal(0, face * 0.1, 2)
        _OCCLUDERS[kind](image, rng, anchor, face, colour, landmarks)


def _shaded_fill(image, mask, colour, rng):
    """Fill a mask with a colour under a soft linear shading ramp, so occluders are not flat."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys) / image.shape[0]
    shade = 1 + rng.uniform(0.1, 0.5) * (ramp - ramp.mean())
    image[ys, xs] = np.clip(np.asarray(colour)[None] * shade[:, None], 0, 1)


def _blob(image, rng, anchor, face, colour, _):
    n = int(rng.integers(6, 13))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = face * rng.uniform(0.12, 0.4) * rng.uniform(0.6, 1.0, n)
    pts = (anchor + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8)
    _shaded_fill(image, mask > 0, colour, rng)


def _box(image, rng, anchor, face, colour, _):
    sides = (float(face * rng.uniform(0.15, 0.6)), float(face * rng.uniform(0.3, 1.2)))
    box = ((float(anchor[0]), float(anchor[1])), sides, float(rng.uniform(0, 180)))
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.boxPoints(box).astype(np.int32), 1)
    _shaded_fill(image, mask > 0, colour, rng)


def _hand(image, rng, anchor, face, colour, _):
    """A palm with four fingers, pointing in a random direction."""
    mask = np.zeros(image.shape[:2], np.uint8)
    angle = rng.uniform(0, 360)
    palm = face * rng.uniform(0.18, 0.3)
    ctr = tuple(int(v) for v in anchor)
    cv2.ellipse(mask, ctr, (int(palm), int(palm * 0.85)), angle, 0, 360, 1, -1)
    rad = np.radians(angle)
    along, across = np.array([np.cos(rad), np.sin(rad)]), np.array([-np.sin(rad), np.cos(rad)])
    for k, off in enumerate(np.linspace(-0.6, 0.6, 4)):
        length = palm * rng.uniform(0.9, 1.3) * (1 - 0.15 * abs(k - 1.5))
        c = anchor + along * (palm * 0.8 + length * 0.5) + across * off * palm
        cv2.ellipse(mask, tuple(int(v) for v in c), (int(length * 0.6), max(int(palm * 0.17), 1)), angle, 0, 360, 1, -1)
    _shaded_fill(image, mask > 0, colour, rng)


def _glasses(image, rng, anchor, face, colour, lm):
    dark = rng.random() < 0.6
    colour = np.full(3, rng.uniform(0.02, 0.15)) if dark else colour
    thick = max(int(face * 0.02), 1)
    for eye in (lm[36:42], lm[42:48]):
        c = eye.mean(0)
        axes = (int(face * rng.uniform(0.11, 0.15)), int(face * rng.uniform(0.08, 0.11)))
        cv2.ellipse(image, tuple(int(v) for v in c), axes, 0, 0, 360, tuple(float(v) for v in colour),
                    -1 if dark else thick, cv2.LINE_AA)
    a, b = lm[39], lm[42]
    cv2.line(image, tuple(int(v) for v in a), tuple(int(v) for v in b), tuple(float(v) for v in colour), thick)


def _mask(image, rng, anchor, face, colour, lm):
    pts = np.concatenate([lm[2:15], lm[[29]]]).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [cv2.convexHull(pts)], 1)
    colour = np.array([0.85, 0.75, 0.55]) * rng.uniform(0.8, 1.1) if rng.random() < 0.5 else colour
    _shaded_fill(image, mask > 0, colour, rng)


def _strands(image, rng, anchor, face, colour, lm):
    colour = tuple(float(v) for v in np.full(3, rng.uniform(0.02, 0.3)))
    for _ in range(int(rng.integers(3, 9))):
        start = anchor + rng.normal(0, face * 0.15, 2)
        pts = [start]
        direction = rng.normal(0, 1, 2)
        for _ in range(6):
            direction = direction + rng.normal(0, 0.4, 2)
            pts.append(pts[-1] + direction / np.linalg.norm(direction) * face * 0.08)
        cv2.polylines(image, [np.array(pts, np.int32)], False, colour, max(int(face * rng.uniform(0.01, 0.03)), 1),
                      cv2.LINE_AA)


_OCCLUDERS = {"blob": _blob, "box": _box, "hand": _hand, "glasses": _glasses, "mask": _mask, "strands": _strands}


def finish(image, rng, size) -> np.ndarray:
    """Downsample (antialiasing), then camera-like degradation: colour, blur, noise, JPEG."""
    image = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    image = image * rng.uniform(0.8, 1.15) + rng.uniform(-0.05, 0.05)
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
    gray = image.mean(2, keepdims=True)
    image = gray + (image - gray) * rng.uniform(0.6, 1.3)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.6:
        image = image + rng.normal(0, rng.uniform(0.003, 0.025), image.shape).astype(np.float32)
    out = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
