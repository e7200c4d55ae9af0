"""Test setup: emulate 8 CPU devices so sharding tests run on any machine.

The flag must be set before JAX initialises its backends, hence here.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
