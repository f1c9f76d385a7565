"""Quantization config: a small validated dataclass that round-trips through JSON.

Mixed precision is data: an ordered list of ``LayerRule`` (layer-name regex → bits), applied in order,
later rules winning. Names are module names as in ``model.named_modules()`` (e.g. ``"IMDB1.c1"``) or
QuantPoint names (e.g. ``"layers.0.attn.q_point"``). ``--bits w4a4`` style strings parse with
:func:`parse_bits`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SrqError

__all__ = ["LayerRule", "QuantConfig", "parse_bits", "FIRST_LAST_POLICIES"]

FIRST_LAST_POLICIES = ("8bit", "fp", "same")
_GRANULARITIES = ("channel", "tensor")
_MODES = ("affine", "uniform", "symmetric", "lsq", "lsq_range", "lsqplus", "pams")  # grids for weights and activations
# weight-only grids: DoReFa, Q-MambaIR's RFA and N2UQ, QuantSR's tanh-rounded LSQ, QuantSR+'s RBD
_W_MODES = (*_MODES, "dorefa", "rfa", "nu2u", "lsq_tanh", "lsq_3sigma", "rbd")
# activation-only grids: LSQ+ with an integer zero point, Q-MambaIR's DLS (range from each sample's statistics,
# four initialisations), QuantSR's RLQ, QuantSR+'s RBD on RLQ
_A_MODES = (*_MODES, "lsqplus_int", "dls", "dls_4sigma", "dls_minmax", "dls_mean_range", "dls_mse", "rlq",
            "rbd_act")
# weight grids whose 7-bit levels an integer runtime can hold within ±64 (reduce_range): zero-centred ones, and
# affine ones, which the export centres (a per-channel offset and its correction); LSQ's are signed wherever a channel
# has a negative weight, i.e. in practice everywhere (the export's overflow check covers the rest)
_REDUCE_RANGE_W_MODES = ("affine", "symmetric", "pams", "lsq", "lsq_tanh", "lsq_3sigma", "lsq_range", "rfa", "nu2u",
                         "rbd")
_WEIGHT_OBSERVERS = ("minmax", "omse", "percentile")
DAN_CHOICES = ("none", "range", "std", "capped")
ONE_BIT_CHOICES = ("binary", "levels")
_ACT_OBSERVERS = ("minmax", "ema_minmax", "percentile", "omse", "dbdc")


def _check_bits(value: Any, what: str, allow_none: bool = False, low: int = 1,
                hint: str = "use 'fp' to keep a layer in float") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 8:
        raise SrqError(f"{what} must be an integer from {low} to 8, got {value!r}; {hint}")


@dataclass
class LayerRule:
    """Override for layers whose name matches ``pattern`` (a regex, full match).

    ``w_bits``/``a_bits``: new bit widths (None: unchanged). ``fp``: keep the layer in float.
    """

    pattern: str
    w_bits: int | None = None
    a_bits: int | None = None
    fp: bool = False

    def __post_init__(self) -> None:
        try:
            self._regex = re.compile(self.pattern)
        except re.error as e:
            raise SrqError(f"layer rule pattern {self.pattern!r} is not a valid regex ({e}); fix the pattern")
        _check_bits(self.w_bits, f"w_bits of rule {self.pattern!r}", allow_none=True)
        _check_bits(self.a_bits, f"a_bits of rule {self.pattern!r}", allow_none=True)

    def matches(self, name: str) -> bool:
        return self._regex.fullmatch(name) is not None

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "w_bits": self.w_bits, "a_bits": self.a_bits, "fp": self.fp}


@dataclass
class QuantConfig:
    """What to quantize and how.

    Attributes:
        w_bits, a_bits: default weight / activation bits (1 … 8).
        w_granularity: ``"channel"`` (one bound pair per output channel) or ``"tensor"``.
        w_mode, a_mode: ``"affine"`` (asymmetric with an integer zero point; default), ``"uniform"``
            (SPR²Q Eq. 1, zero not necessarily on the grid) or ``"symmetric"``; see ``one_bit`` for 1 bit.
            Keeping zero on the grid matters: IMDN x4 W4A8 on Set5 'baby' loses 3.4 dB with "affine" and
            far more with "uniform" min/max bounds (near-zero weights all shift by the same offset).
            The QAT baselines' grids: ``"lsq"`` (learned step), ``"lsqplus"`` (learned step and offset),
            ``"pams"`` (learned max scale; PAMS's weights are ``"symmetric"``) and, for weights only,
            ``"dorefa"`` and ``"lsq_3sigma"`` (LSQ with LSQ+'s weight init), for activations only
            ``"lsqplus_int"`` (LSQ+ with its offset snapped to the grid: an integer zero point, exportable); and
            ``"lsq_range"``, LSQ with its steps initialised from the observer's range (``w_observer`` /
            ``a_observer``) instead of the paper's statistic; LSQ,
            PAMS and the 1-bit grid choose their own observer.
        w_observer, a_observer: how bounds are initialised (``minmax``, ``ema_minmax`` (act.),
            ``percentile``, ``omse``).
        first_last: ``"8bit"`` (default), ``"fp"`` or ``"same"`` for the first and last quantizable layers.
        quant_points: also quantize the operands models mark with ``QuantPoint`` (attention, scan).
        a_dan: dynamic activation normalization (GBA) on layer inputs: ``"none"``, ``"range"`` (each
            sample's channels mapped to [0, 1] before quantization), ``"std"`` (zero mean, unit std) or
            ``"capped"`` (``"range"`` whose per-sample ranges are clamped into the calibrated ones); see
            :class:`srq.quant.Quantizer`. Not applied at ``QuantPoint`` operands, whose channel layout the
            core does not know.
        a_dan_window: ``"range"`` DAN over square windows of this many pixels instead of the whole sample
            (0, the default and the paper's form). Not in the paper: whole-image ranges grow with the image
            and coarsen the grid (see docs/methods.md, GBA).
        one_bit: how 1-bit quantizers work: ``"binary"`` (sign·α, the default) or ``"levels"`` (two learnable
            levels ``lower``/``upper``: Eq. 1 with n = 1, which also suits non-negative activations).
        rules: ordered overrides, later ones win.
        a_output_bits: requantize the output of every layer whose weights and input are both quantized (the
            integer layers) with an affine per-tensor quantizer of this many bits (``a_observer`` bounds), as
            integer runtimes do (``DQ → Conv → Q`` fuses into one integer convolution with a uint8 output); None
            (default): those outputs stay float, as in the papers. Left out of :meth:`to_dict` while None.
        reduce_range: layers with 8-bit inputs and 8-bit weights get 7-bit weights, as ONNX Runtime's option of
            that name: x86 CPUs without VNNI (AVX2 only) sum pairs of uint8 × int8 products in int16, which 8-bit
            inputs with 8-bit weights overflow (2·255·127 > 2¹⁵ − 1) and 7-bit weights held within ±64 cannot
            (2·255·64 < 2¹⁵): zero-centred grids (``symmetric``, ``pams``, the LSQ family, ``rfa``, ``nu2u``,
            ``rbd``) are, and the export centres ``affine`` ones. Left out of :meth:`to_dict` while False.
        a_mode_rules: ordered ``[regex, a_mode]`` pairs: activation quantizers (layer inputs and marked operands)
            whose name fully matches ``regex`` use grid ``a_mode`` instead of ``a_mode``; later pairs win, and each
            must match something (e.g. Q-MambaIR: DLS inside the SSM blocks, LSQ+ elsewhere). Left out of
            :meth:`to_dict` while empty.
    """

    w_bits: int = 4
    a_bits: int = 4
    w_granularity: str = "channel"
    w_mode: str = "affine"
    a_mode: str = "affine"
    w_observer: str = "minmax"
    a_observer: str = "minmax"
    first_last: str = "8bit"
    quant_points: bool = True
    a_dan: str = "none"
    a_dan_window: int = 0
    one_bit: str = "binary"
    rules: list[LayerRule] = field(default_factory=list)
    a_mode_rules: list[list[str]] = field(default_factory=list)
    a_output_bits: int | None = None
    reduce_range: bool = False

    def __post_init__(self) -> None:
        _check_bits(self.w_bits, "w_bits")
        _check_bits(self.a_bits, "a_bits")
        _check_bits(self.a_output_bits, "a_output_bits", allow_none=True, low=2,
                    hint="leave it unset (null) for float layer outputs")
        rule_keys = set(LayerRule.__dataclass_fields__)
        for r in self.rules:
            if not isinstance(r, LayerRule) and (not isinstance(r, dict) or set(r) - rule_keys or "pattern" not in r):
                raise SrqError(f"layer rule {r!r} is not valid; a rule is a mapping with 'pattern' and "
                               f"optionally 'w_bits', 'a_bits', 'fp'")
        self.rules = [r if isinstance(r, LayerRule) else LayerRule(**r) for r in self.rules]
        if not isinstance(self.quant_points, bool):
            raise SrqError(f"quant_points must be true or false, got {self.quant_points!r}")
        if not isinstance(self.reduce_range, bool):
            raise SrqError(f"reduce_range must be true or false, got {self.reduce_range!r}")
        if self.reduce_range and self.w_mode not in _REDUCE_RANGE_W_MODES:
            raise SrqError(f"reduce_range keeps 7-bit weights within ±64, which needs an affine or zero-centred "
                           f"weight grid ({', '.join(_REDUCE_RANGE_W_MODES)}), not w_mode={self.w_mode!r}")
        self.a_mode_rules = [_check_mode_rule(r) for r in self.a_mode_rules]
        choices = {"w_granularity": _GRANULARITIES, "w_mode": _W_MODES, "a_mode": _A_MODES,
                   "w_observer": _WEIGHT_OBSERVERS, "a_observer": _ACT_OBSERVERS, "first_last": FIRST_LAST_POLICIES,
                   "a_dan": DAN_CHOICES, "one_bit": ONE_BIT_CHOICES}
        if isinstance(self.a_dan_window, bool) or not isinstance(self.a_dan_window, int) or self.a_dan_window < 0 \
                or (self.a_dan_window and self.a_dan != "range"):
            raise SrqError(f"a_dan_window must be 0, or a positive window size with a_dan='range'; got "
                           f"{self.a_dan_window!r} with a_dan={self.a_dan!r}")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SrqError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rules"] = [r.to_dict() for r in self.rules]
        if not self.a_mode_rules:  # configs without per-layer grids read (and hash) as before the field
            del d["a_mode_rules"]
        if self.a_output_bits is None:  # configs with float layer outputs read (and hash) as before the field
            del d["a_output_bits"]
        if not self.reduce_range:  # likewise for configs without it
            del d["reduce_range"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise SrqError(f"unknown quantization config keys: {', '.join(sorted(unknown))}; "
                           f"valid keys are {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "QuantConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SrqError(f"quantization config is not valid JSON ({e}); fix the file")


def _check_mode_rule(rule: Any) -> list[str]:
    """One ``[regex, a_mode]`` pair of ``QuantConfig.a_mode_rules``, checked (one-line SrqError otherwise)."""
    if not isinstance(rule, (list, tuple)) or len(rule) != 2 or not all(isinstance(v, str) for v in rule):
        raise SrqError(f"a_mode rule {rule!r} is not valid; write [regex, a_mode], e.g. ['body\\..*', 'dls']")
    pattern, mode = rule
    try:
        re.compile(pattern)
    except re.error as e:
        raise SrqError(f"a_mode rule pattern {pattern!r} is not a valid regex ({e}); fix the pattern")
    if mode not in _A_MODES:
        raise SrqError(f"a_mode rule {pattern!r}: a_mode must be one of {', '.join(_A_MODES)}, got {mode!r}")
    return [pattern, mode]


def parse_bits(spec: str) -> tuple[int, int]:
    """``"w4a4"`` → (4, 4); ``"w8a8"``, ``"W2A2"``, ``"4/4"`` also accepted."""
    m = re.fullmatch(r"\s*[wW](\d+)\s*[aA](\d+)\s*|\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m:
        raise SrqError(f"cannot read bit widths {spec!r}; write them like w4a4 or 4/4")
    w, a = (int(g) for g in m.groups() if g is not None)
    _check_bits(w, "weight bits")
    _check_bits(a, "activation bits")
    return w, a
