"""A downstream-style package with its own registry scope (like mmpretrain or mmdet)."""
