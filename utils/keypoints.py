"""The COCO person-keypoint tables shared by the `kphm` view's writer and reader, without torch.

The 17 channels of a stored heatmap are the joints of :data:`COCO_KEYPOINTS`, in that order; a
horizontal flip of a clip reorders them by :data:`FLIP_PERMUTATION`.
"""

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# Limb pairs of COCO's person skeleton, 0-based indices into COCO_KEYPOINTS.
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# Maps each keypoint to its mirror image: a horizontal flip moves joint i to FLIP_PERMUTATION[i].
FLIP_PERMUTATION = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
