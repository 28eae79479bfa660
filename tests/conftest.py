"""Suite-wide settings.

Hypothesis runs with the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another: no
per-example deadline and no "too slow" health check, since both judge the machine's speed
(machines of this kind differ 2–4×, and CI may share its cores), not the code.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
