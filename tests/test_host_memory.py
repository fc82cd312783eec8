"""Tests for mdssl_jax.host_memory (glibc mallopt: reuse freed memory)."""

import subprocess
import sys
import textwrap

import pytest

from mdssl_jax import config_lib

# Allocates, touches and frees a 256 MiB block three times and prints the
# minor page faults of the last two rounds. glibc serves such a block with
# mmap and unmaps it on free, so every round faults all its 65536 pages
# again unless the freed memory is kept.
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from mdssl_jax import host_memory
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    if sys.argv[1] == "keep":
      assert not host_memory.tried()
      assert host_memory.keep_freed_host_memory()
      assert host_memory.tried()
      assert host_memory.keep_freed_host_memory()  # idempotent
    def round_():
      p = libc.malloc(256 << 20)
      ctypes.memset(p, 1, 256 << 20)
      libc.free(p)
    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    round_(); round_()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True,
                       capture_output=True, text=True)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="mallopt is glibc-only")
def test_freed_memory_is_reused_without_page_faults():
  pages = 2 * (256 << 20) // 4096  # two rounds of 256 MiB
  default = _faults("default")
  kept = _faults("keep")
  assert default > 0.9 * pages, default  # glibc re-faults every round
  assert kept < 0.05 * pages, kept


def test_config_default_and_validation():
  config = config_lib.get_default_config("simclr")
  assert config.keep_host_memory is True
  config.keep_host_memory = False
  config_lib.validate(config)
  with pytest.raises(TypeError):  # ml_collections keeps the field a bool
    config.keep_host_memory = "yes"
  config.keep_host_memory = None
  with pytest.raises(config_lib.ConfigError, match="keep_host_memory"):
    config_lib.validate(config)
