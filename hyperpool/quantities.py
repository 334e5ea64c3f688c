"""Kubernetes resource quantities (``"0.5"``, ``"500m"``, ``"512Mi"``, ``"1e3"``) as numbers.

The HyperFlow operator's example WorkerPool writes memory as bare bytes (``"524288000"``) while
users write ``512Mi``; ResourceQuota status uses whatever the API server canonicalised. Quota
arithmetic must therefore parse quantities, never assume bare numbers. The grammar is the one
in k8s.io/apimachinery/pkg/api/resource (decimal SI, binary SI and decimal exponent suffixes).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Also used verbatim as the CRD's OpenAPI ``pattern`` so the API server rejects what we can't parse.
QUANTITY_PATTERN = (
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity to a :class:`~decimal.Decimal` in base units (cores, bytes, devices).

    Raises ``ValueError`` with the offending text for anything Kubernetes would reject.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"quantity must not be negative: {value!r}")
        return Decimal(str(value))
    text = str(value).strip()
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(
            f"not a Kubernetes quantity: {value!r} (expected e.g. '0.5', '500m', '512Mi', '1G')"
        )
    number = text.lstrip("+")
    suffix = match.group(3) or ""
    if suffix:
        number = number[: -len(suffix)]
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guarantees a number
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    return base * (Decimal(10) ** int(suffix[1:]))


_SI_SUFFIX = {18: "E", 15: "P", 12: "T", 9: "G", 6: "M", 3: "k", 0: "", -3: "m", -6: "u",
              -9: "n"}


def canonical_quantity(value: str | int | float) -> str:
    """The string the Kubernetes API server stores for ``value`` (``"0.5"`` -> ``"500m"``).

    Server-side apply compares applied and stored *text*: applying ``"0.5"`` over a stored
    ``"500m"`` counts as a change and writes the object again on every reconcile (see
    kubernetes/kubernetes#121404). Applying the canonical form keeps re-applies no-ops. Same
    rules as apimachinery's ``Quantity.String()``: the format (binary SI, decimal SI, decimal
    exponent) follows the input's suffix; the mantissa is the largest exact integer.
    """
    amount = parse_quantity(value)
    text = str(value).strip()
    if amount == 0:
        return "0"
    # apimachinery rounds sub-nano precision up to the next nano-unit.
    amount = (amount * 10**9).to_integral_value(rounding="ROUND_CEILING") / Decimal(10**9)
    binary = any(text.endswith(s) for s in _BINARY)
    exponent = bool(re.search(r"[eE][-+]?[0-9]+$", text))
    if binary and amount == amount.to_integral_value() and amount >= 1024:
        for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
            if amount % factor == 0:
                return f"{int(amount // factor)}{suffix}"
    for exp in sorted(_SI_SUFFIX, reverse=True):
        mantissa = amount / (Decimal(10) ** exp)
        if mantissa == mantissa.to_integral_value():
            if exponent:
                return str(int(mantissa)) if exp == 0 else f"{int(mantissa)}e{exp}"
            return f"{int(mantissa)}{_SI_SUFFIX[exp]}"
    return str(amount)  # pragma: no cover - nano rounding above makes exp=-9 always match


def format_cpu(cores: Decimal | float) -> str:
    """Render cores as Kubernetes writes them: millicores when fractional (``"500m"``)."""
    millis = Decimal(str(cores)) * 1000
    if millis % 1000 == 0:
        return str(int(millis // 1000))
    return f"{int(millis.to_integral_value())}m"


def format_bytes(amount: Decimal | int) -> str:
    """Render bytes with the largest exact binary suffix (``"512Mi"``), else plain bytes."""
    value = int(amount)
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)
