"""Which CPUs count as having native bf16 (the PyTorch path's segmenter uses bf16 only there)."""

from __future__ import annotations

import pytest

from lumbargrade.runtime import cpu_info

pytestmark = pytest.mark.core

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
XEON_AVX2 = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz
flags\t\t: fpu sse2 fma avx avx2
"""
SAPPHIRE = """model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sha1 sha2 crc32 atomics fphp asimdhp sve i8mm bf16
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("text, native, flags", [
    (EPYC, True, ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]),
    (XEON_AVX2, False, ["avx2", "fma"]),
    (SAPPHIRE, True, ["avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"]),
    (GRAVITON3, True, ["asimd", "bf16", "sve", "i8mm"]),
    ("", False, []),
])
def test_native_bf16_from_cpu_flags(text, native, flags):
    info = cpu_info(text)
    assert info["native_bf16"] is native
    assert info["flags"] == flags


def test_cpu_model_is_reported():
    assert cpu_info(EPYC)["model"] == "AMD EPYC"
    assert cpu_info(XEON_AVX2)["model"].startswith("Intel(R) Xeon(R) CPU E5")
