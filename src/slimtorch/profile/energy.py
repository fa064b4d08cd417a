"""Energy estimates from the 45 nm table the compression literature uses.

The figures are Horowitz, "Computing's energy problem", ISSCC 2014, as quoted by Han et al.
(Deep Compression, ICLR 2016; EIE, ISCA 2016). They are estimates for a 45 nm process at 0.9 V,
useful for ratios (DRAM vs arithmetic, 8-bit vs 32-bit), not as a measurement of any machine.

Scaling rule by bit width: adds scale linearly with bits and multiplies quadratically (an
array multiplier has ``bits**2`` cells); check: 0.2 pJ * (32/8)**2 = 3.2 pJ ~ 3.1 pJ. Widths the
table has are returned exactly. Below the narrowest or above the widest entry of the same
operation and number kind, that entry is scaled by the rule. Between two entries the energy is
interpolated log-log (a power law through both neighbours, exponent ~0.87 for int adds, ~1.98
for int mults, ~1.17 / ~1.75 for float adds / mults), which keeps the curve monotone in bits
where plain scaling from the nearest entry would jump at the midpoint. Memory reads scale
linearly from the 32-bit figure (per-bit cost = 32-bit cost / 32); writes cost what reads cost
(the table has reads only).

Example:
    >>> round(mac_energy_pj(32, "float"), 3)
    4.6
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal

from slimtorch.errors import ConfigError

Number = Literal["int", "float"]
Memory = Literal["dram", "sram"]

# Horowitz, ISSCC 2014 (45 nm, 0.9 V), energy per operation in picojoules.
INT8_ADD_PJ = 0.03
INT32_ADD_PJ = 0.1
FP16_ADD_PJ = 0.4
FP32_ADD_PJ = 0.9
INT8_MULT_PJ = 0.2
INT32_MULT_PJ = 3.1
FP16_MULT_PJ = 1.1
FP32_MULT_PJ = 3.7
SRAM_READ_32BIT_PJ = 5.0  # 32-bit read from an 8 KB SRAM
DRAM_READ_32BIT_PJ = 640.0  # 32-bit read from DRAM
TABLE_MEMORY_WORD_BITS = 32

ADD_TABLE_PJ: dict[tuple[Number, int], float] = {
    ("int", 8): INT8_ADD_PJ,
    ("int", 32): INT32_ADD_PJ,
    ("float", 16): FP16_ADD_PJ,
    ("float", 32): FP32_ADD_PJ,
}
MULT_TABLE_PJ: dict[tuple[Number, int], float] = {
    ("int", 8): INT8_MULT_PJ,
    ("int", 32): INT32_MULT_PJ,
    ("float", 16): FP16_MULT_PJ,
    ("float", 32): FP32_MULT_PJ,
}
ADD_SCALING_POWER = 1  # adder energy ~ bits
MULT_SCALING_POWER = 2  # array multiplier energy ~ bits**2
MAX_BITS = 64


@dataclass(frozen=True)
class EnergyBreakdown:
    """Energy of one inference, in picojoules, split by where it goes.

    ``total_pj = compute_pj + memory_pj``; from ``estimate_energy`` also
    ``compute_pj = mults_pj + adds_pj`` and ``memory_pj = dram_pj + sram_pj`` (the split
    fields default to 0 for totals built by hand).
    """

    compute_pj: float
    memory_pj: float
    total_pj: float
    mults_pj: float = 0.0
    adds_pj: float = 0.0
    dram_pj: float = 0.0
    sram_pj: float = 0.0


def _check_kind(number: str, bits: int) -> None:
    if number not in ("int", "float"):
        raise ConfigError(f"number: expected 'int' or 'float', got {number!r}")
    if not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bits: expected an integer in 1..{MAX_BITS}, got {bits!r}")


def _scaled(table: dict[tuple[Number, int], float], bits: int, number: Number, power: int) -> float:
    _check_kind(number, bits)
    widths = sorted(w for kind, w in table if kind == number)
    below = [w for w in widths if w <= bits]
    above = [w for w in widths if w >= bits]
    if not below or not above:  # outside the table: the stated power law
        anchor = widths[0] if not below else widths[-1]
        return table[(number, anchor)] * (bits / anchor) ** power
    lo, hi = below[-1], above[0]
    if lo == hi:
        return table[(number, lo)]
    fitted = math.log(table[(number, hi)] / table[(number, lo)]) / math.log(hi / lo)
    return table[(number, lo)] * (bits / lo) ** fitted


def add_energy_pj(bits: int, number: Number) -> float:
    """Energy of one addition.

    Args:
        bits: Operand width.
        number: ``"int"`` or ``"float"``.

    Returns:
        Picojoules: the table entry, else the scaling rule of the module docstring.

    Example:
        >>> add_energy_pj(8, "int"), add_energy_pj(4, "int")
        (0.03, 0.015)
    """
    return _scaled(ADD_TABLE_PJ, bits, number, ADD_SCALING_POWER)


def mult_energy_pj(bits: int, number: Number) -> float:
    """Energy of one multiplication.

    Args:
        bits: Operand width.
        number: ``"int"`` or ``"float"``.

    Returns:
        Picojoules: the table entry, else the scaling rule of the module docstring.

    Example:
        >>> mult_energy_pj(32, "float"), round(mult_energy_pj(4, "int"), 3)
        (3.7, 0.05)
    """
    return _scaled(MULT_TABLE_PJ, bits, number, MULT_SCALING_POWER)


def mac_energy_pj(bits: int, dtype: Number) -> float:
    """Energy of one multiply-accumulate: one multiply plus one add, both at ``bits``.

    The accumulator is taken at the operand width; real int8 MACs usually accumulate in
    32 bits, so add ``add_energy_pj(32, "int") - add_energy_pj(8, "int")`` to model that.

    Args:
        bits: Operand width.
        dtype: ``"int"`` or ``"float"``.

    Returns:
        Picojoules per MAC.

    Example:
        >>> round(mac_energy_pj(8, "int"), 3)
        0.23
    """
    return mult_energy_pj(bits, dtype) + add_energy_pj(bits, dtype)


def read_energy_pj_per_bit(memory: Memory) -> float:
    """Energy to read (or write) one bit: the 32-bit table figure divided by 32.

    Args:
        memory: ``"dram"`` or ``"sram"``.

    Returns:
        Picojoules per bit.

    Example:
        >>> read_energy_pj_per_bit("dram")
        20.0
    """
    per_word = {"dram": DRAM_READ_32BIT_PJ, "sram": SRAM_READ_32BIT_PJ}
    if memory not in per_word:
        raise ConfigError(f"memory: expected 'dram' or 'sram', got {memory!r}")
    return per_word[memory] / TABLE_MEMORY_WORD_BITS


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ConfigError(f"{name}: expected a count >= 0, got {value!r}")


def estimate_energy(
    macs: int,
    other_flops: int,
    weight_bits_read: int,
    activation_bits_read: int,
    activation_bits_written: int,
    weight_bits: int = 32,
    act_bits: int = 32,
    number: Number = "float",
    weights_in: Memory = "dram",
) -> EnergyBreakdown:
    """Energy of one inference under a simple memory model.

    Memory model: every weight bit is read once per inference from ``weights_in`` (DRAM by
    default; pass ``"sram"`` when the weights fit on chip); activations are read and written in
    SRAM. Arithmetic: each MAC is one multiply and one add at ``max(weight_bits, act_bits)``;
    ``other_flops`` (bias, activation functions, pooling, normalization) are adds at
    ``act_bits``.

    Args:
        macs: Multiply-accumulates per inference.
        other_flops: Other elementwise operations per inference.
        weight_bits_read: Total weight bits read (e.g. the sum of ``model_size_bits``).
        activation_bits_read: Activation bits read per inference.
        activation_bits_written: Activation bits written per inference.
        weight_bits: Weight operand width of the arithmetic.
        act_bits: Activation operand width of the arithmetic.
        number: ``"int"`` or ``"float"`` arithmetic.
        weights_in: ``"dram"`` or ``"sram"``.

    Returns:
        An ``EnergyBreakdown`` in picojoules.

    Example:
        >>> e = estimate_energy(10**6, 0, 0, 0, 0)
        >>> round(e.total_pj / 10**6, 3)
        4.6
    """
    _check_counts(
        macs=macs,
        other_flops=other_flops,
        weight_bits_read=weight_bits_read,
        activation_bits_read=activation_bits_read,
        activation_bits_written=activation_bits_written,
    )
    mac_bits = max(weight_bits, act_bits)
    mults = macs * mult_energy_pj(mac_bits, number)
    adds = macs * add_energy_pj(mac_bits, number) + other_flops * add_energy_pj(act_bits, number)
    weights = weight_bits_read * read_energy_pj_per_bit(weights_in)
    activations = (activation_bits_read + activation_bits_written) * read_energy_pj_per_bit("sram")
    dram = weights if weights_in == "dram" else 0.0
    sram = activations + (weights if weights_in == "sram" else 0.0)
    compute, memory = mults + adds, dram + sram
    return EnergyBreakdown(compute, memory, compute + memory, mults, adds, dram, sram)


def sum_energy(parts: Iterable[EnergyBreakdown]) -> EnergyBreakdown:
    """Field-by-field sum, e.g. of per-layer breakdowns into a model total.

    Args:
        parts: Breakdowns to add; none gives all zeros.

    Returns:
        An ``EnergyBreakdown`` whose every field is the sum of the parts' fields.

    Example:
        >>> sum_energy([estimate_energy(1, 0, 0, 0, 0)] * 2).mults_pj
        7.4
    """
    names = [f.name for f in fields(EnergyBreakdown)]
    totals = dict.fromkeys(names, 0.0)
    for part in parts:
        for name in names:
            totals[name] += getattr(part, name)
    return EnergyBreakdown(**totals)
