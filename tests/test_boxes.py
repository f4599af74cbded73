"""Patch boxes: lesion margin, minimum size, border shift; healthy background rule."""

import numpy as np
import pytest

from transforms import BoxError, LesionBox, RandHealthyBoxes, background_mask, lesion_box, sample_healthy_boxes


def _side(box):
    assert box[2] - box[0] == box[3] - box[1], "boxes are square"
    return box[2] - box[0]


def test_margin_of_60_on_every_side():
    # a 100 x 50 lesion in the middle of a large image
    contour = [(1000, 2000), (1099, 2000), (1099, 2049), (1000, 2049)]
    box = lesion_box(contour, (4084, 3328))
    assert _side(box) == 100 + 120
    assert box[0] == 1000 - 60 and box[2] == 1100 + 60  # the longer side gets exactly the margin
    assert box[1] <= 2000 - 60 and box[3] >= 2050 + 60  # the shorter side gets at least the margin
    centre_y = (box[1] + box[3]) / 2
    assert abs(centre_y - 2025) <= 1


def test_minimum_size_128_for_small_lesions_and_points():
    assert _side(lesion_box([(500, 500)], (1000, 1000))) == 128
    assert _side(lesion_box([(500, 500), (501, 502)], (1000, 1000))) == 128


def test_shifted_inside_never_padded():
    h, w = 600, 500
    box = lesion_box([(2, 3), (20, 30)], (h, w))  # touches the top-left corner
    assert box[0] == 0 and box[1] == 0 and _side(box) == 28 + 120  # rows 3..30 inclusive
    box = lesion_box([(480, 590), (499, 599)], (h, w))  # bottom-right corner
    assert box[2] == w and box[3] == h
    for box in (lesion_box([(x, y)], (h, w)) for x in (0, 250, 499) for y in (0, 300, 599)):
        assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h


def test_lesion_larger_than_image_short_side():
    box = lesion_box([(10, 10), (480, 580)], (600, 500))
    assert _side(box) == 500 and box[0] == 0 and box[2] == 500


def test_bad_contours():
    with pytest.raises(BoxError, match="empty contour"):
        lesion_box([], (600, 500))
    with pytest.raises(BoxError, match="outside the 500x600 image"):
        lesion_box([(100, 100), (520, 100)], (600, 500))
    with pytest.raises(BoxError, match="non-finite"):
        lesion_box([(np.nan, 3)], (600, 500))
    with pytest.raises(BoxError, match="smaller than the minimum patch size"):
        lesion_box([(10, 10)], (100, 100))
    # points just on the border (within tolerance) are clipped, not refused
    assert lesion_box([(-1, -1.5)], (600, 500))[:2] == [0, 0]


def test_lesion_box_transform():
    assert LesionBox(margin=10, min_size=16)([(50, 50), (59, 59)], (1, 100, 100)) == [40, 40, 70, 70]


def _breast(h=400, w=300):
    image = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    image[((xx / (0.83 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2) <= 1] = 0.6  # half-ellipse at the left wall
    return image


def test_healthy_boxes_respect_background_rule():
    image = _breast()
    rng = np.random.RandomState(2021)
    boxes = sample_healthy_boxes(image, 20, rng, size=128, max_background=0.4)
    mask = background_mask(image)
    assert len(boxes) == 20
    for x0, y0, x1, y1 in boxes:
        assert x1 - x0 == 128 and y1 - y0 == 128
        assert mask[y0:y1, x0:x1].mean() <= 0.4
    # the rule matters: a pure-tissue rule rejects boxes that the 40% rule accepts
    strict = sample_healthy_boxes(image, 5, np.random.RandomState(1), max_background=0.0)
    assert all(mask[y0:y1, x0:x1].mean() == 0 for x0, y0, x1, y1 in strict)


def test_healthy_boxes_avoid_lesions_and_are_reproducible():
    image = _breast(600, 400)
    lesion = [40, 100, 200, 260]
    boxes = sample_healthy_boxes(image, 5, np.random.RandomState(3), avoid=[lesion], avoid_distance=20)
    for b in boxes:
        separated = b[2] + 20 <= lesion[0] or lesion[2] + 20 <= b[0] or b[3] + 20 <= lesion[1] or lesion[3] + 20 <= b[1]
        assert separated, b
    assert boxes == sample_healthy_boxes(image, 5, np.random.RandomState(3), avoid=[lesion], avoid_distance=20)
    sampler = RandHealthyBoxes(count=3)
    sampler.set_random_state(7)
    first = sampler(image[None])
    sampler.set_random_state(7)
    assert sampler(image[None]) == first


def test_healthy_boxes_error_when_no_tissue():
    image = np.zeros((300, 300), np.float32)
    image[:50, :50] = 1.0
    with pytest.raises(BoxError, match="too little breast tissue"):
        sample_healthy_boxes(image, 1, np.random.RandomState(0), max_tries=200)
