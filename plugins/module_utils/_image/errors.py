# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Errors of the image cache: one area type, plus a refusal that names the rule it broke."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError

STEP = "image_cache"


class ImageError(NimbusError):
    """Fetching, verifying or converting an image failed."""

    step = STEP


class ImageRefused(ImageError):
    """The image itself is unacceptable (hostile, broken, wrong format or size): never retryable,
    another host would refuse it too."""

    retryable = False

    def __init__(self, image_id, rule, detail, step=None):
        super().__init__("image %s refused by rule %s: %s" % (image_id, rule, detail), step=step)
        self.image_id = image_id
        self.rule = rule
        self.detail = detail

    def result(self):
        result = super().result()
        result.update(rule=self.rule, image_id=self.image_id)
        return result
