"""Symbolic dimensions: integer expressions over named sizes, for shapes that vary from call to call.

`lucid.dim("N")` (or `dim("D", min=3, max=256)`) is a named size: a `Dim` symbol with a smallest
value (1 unless given) and an optional largest one. Arithmetic on it builds an `Expr`: sums,
integer multiples, products of symbols, and floor division by a positive int (`ceil_div(e, k)` is
`(e + k - 1) // k`, `e % k` is `e - k * (e // k)`); Python ints mix in freely. That covers the
sizes shape rules compute: a conv's `(D + 2p - d(k-1) - 1) // s + 1`, a transposed conv's
`(D - 1) * s - 2p + d(k-1) + op + 1`, `D * 2`, concat sums, reshape products.

Canonical form. An expression is a polynomial with integer coefficients over *atoms*: the symbols
and the floor divisions `inner // k`, each inner expression itself canonical. Floor division is
simplified by what holds for every integer value of the symbols: terms whose coefficients k
divides leave the division (`(2*D + 3) // 2 == D + 1`), the constant is reduced modulo k, and a
division of a division multiplies the divisors (`(D // 2) // 2 == D // 4`). Equal canonical forms
are the same size (`same(a, b)`) and hash equal (`(D - 1) // 2 + 1` and `(D + 1) // 2`); different
forms are not the same even where they agree for every value (`2 * (D // 2)` and `D`). A result
without symbols is a plain int, so concrete shapes stay tuples of ints.

Comparisons. Every comparison of sizes is a question, `==` and `!=` included: model code that
branches on a size (`if x.shape[2] % 2 == 0:`, `if d == 1:`, `if h != w:`) gets an answer that holds
for every size the graph serves, with what it assumed recorded, or a refusal; never a silent
"unequal" that is wrong for some sizes. Equal canonical forms are equal without asking; an int (a
NumPy int, an integral float) or another form is asked about, so `2 * (D // 2) == D` is a question
too. A number that is not an integer is never equal to a size; anything else is not comparable
(NotImplemented: `D == None` is False). `bool(size)` asks `size != 0`. The questions shape rules ask
("is the output empty?", "do the concatenated extents agree?": `equal(a, b, what)`, the orderings
`<`, `<=`, `>`, `>=`) are the same, answered by this rule:
1. if the symbols' ranges decide it (interval bounds from each symbol's min and max), that answer;
2. else, if it depends on two or more symbols (`N == M`, `D < H`), a ShapeError naming them: the
   graph would hold for some combinations of the sizes only;
3. else an equality that pins a symbol to one value (`D == 4`: a bare symbol against a constant) is a
   ShapeError too: that dimension would not be dynamic;
4. else the question is decided at the *reference point*, every symbol at its minimum, and the
   answer is recorded as a `Constraint` on the graph being built (in the innermost `recording()`),
   as guards are: `D - 2 >= 1` is recorded as `D >= 3`. Every recorded constraint mentions one
   symbol. A graph is valid exactly for the sizes that satisfy all its constraints: for them every
   rule takes the branch it took when the graph was built, so specialising to them gives the graph a
   trace at those sizes would.

Structure. Code that needs structure rather than a question compares with `same(a, b)` (sizes or
tuples of them), which never asks, records or raises: `TensorType` and `Constraint` equality, the
-1 of a reshape, broadcasting's 1, and fast paths whose branches give the same result (a reshape to
the shape it has). Hashes follow the canonical form (a `Dim`'s includes its range), so dictionaries
and sets of sizes find structurally equal keys (also after pickling: an Expr's hash is computed again
where it is loaded); Python asks `==` of two keys only when their hashes collide, which for different
forms is a chance of about 2**-60.

Broadcasting (`broadcast_dims`): a symbol against 1 gives the symbol (if it is 1 at run time the
result is 1 too, which is the symbol's value); a symbol against itself gives it; a symbol against a
concrete size above 1 or against another symbol is refused, since the answer would pin the symbol.

`str(e)` is Python syntax (`(D + 1) // 2`, `2*N*D`, `D % 4` for `D - 4*(D // 4)`); `parse_expression(text, dims)` reads it back
without evaluating anything. `evaluate(e, {"D": 32})` gives the int.
"""
from __future__ import annotations

import ast
import keyword
import math
import operator
import numbers
import threading
from contextlib import contextmanager
from typing import NamedTuple

from ..errors import ShapeError, TraceError


class Dim:
    """A named size: the symbol of `lucid.dim(name, min=1, max=None)`."""

    __slots__ = ("name", "min", "max")

    def __init__(self, name: str, min: int = 1, max: int | None = None):
        if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) and name not in _RESERVED):
            raise ShapeError(f"lucid.dim: a dimension's name must be a Python identifier, got {name!r}")
        if not is_int(min) or min < 0 or (max is not None and (not is_int(max) or max < min)):
            raise ShapeError(f"lucid.dim({name!r}): min must be an int >= 0 and max None or an int >= min, "
                             f"got min={min!r} max={max!r}")
        self.name, self.min, self.max = name, int(min), None if max is None else int(max)

    def sort_key(self) -> tuple:
        return (0, self.name)

    def _bounds(self) -> tuple:
        return self.min, math.inf if self.max is None else self.max

    def __eq__(self, other) -> bool:
        return isinstance(other, Dim) and (self.name, self.min, self.max) == (other.name, other.min, other.max)

    def __hash__(self) -> int:
        return hash((self.name, self.min, self.max))

    def __str__(self) -> str:
        return self.name

    def declaration(self) -> str:
        """`D min=3` or `D min=3 max=64`: how the text form declares the symbol."""
        return f"{self.name} min={self.min}" + ("" if self.max is None else f" max={self.max}")

    def __repr__(self) -> str:
        return f"lucid.dim({self.name!r}, min={self.min}" + ("" if self.max is None else f", max={self.max}") + ")"


#: Names the text form gives another meaning (a function of size expressions; attribute literals).
_RESERVED = {"ceil_div", "inf", "nan"}


class _FloorDiv:
    """The atom `inner // divisor` (inner a canonical Expr that the division cannot simplify)."""

    __slots__ = ("inner", "divisor", "_sort_key")

    def __init__(self, inner: "Expr", divisor: int):
        self.inner, self.divisor = inner, divisor
        self._sort_key = (1, str(inner), divisor)

    def sort_key(self) -> tuple:
        return self._sort_key

    def _bounds(self) -> tuple:
        lo, hi = bounds(self.inner)
        return _floor_div_bound(lo, self.divisor), _floor_div_bound(hi, self.divisor)

    def __eq__(self, other) -> bool:
        return isinstance(other, _FloorDiv) and self.divisor == other.divisor and same(self.inner, other.inner)

    def __hash__(self) -> int:
        return hash((hash(self.inner), self.divisor))

    def __str__(self) -> str:
        inner = str(self.inner)
        return f"({inner}) // {self.divisor}" if len(self.inner.terms) > 1 or "//" in inner else f"{inner} // {self.divisor}"


def _floor_div_bound(x, k: int):
    return x if math.isinf(x) else x // k


class Expr:
    """A canonical integer expression with at least one symbol; see the module docstring.

    `terms` is a sorted tuple of (monomial, coefficient), a monomial a sorted tuple of atoms (the
    constant term has the monomial ())."""

    __slots__ = ("terms", "_hash", "_text")

    def __init__(self, terms: tuple):
        self.terms = terms
        self._hash = hash(tuple((m, c, c == -1) for m, c in terms))   # hash(-1) == hash(-2) in CPython
        self._text = None                        # str(self), made on first use (an Expr never changes)

    # ------------------------------------------------------------------ structure
    @property
    def free_symbols(self) -> frozenset:
        return free_symbols(self)

    @property
    def symbol(self) -> Dim | None:
        """The Dim when the expression is one bare symbol, else None."""
        if len(self.terms) == 1 and self.terms[0][1] == 1 and len(self.terms[0][0]) == 1:
            atom = self.terms[0][0][0]
            return atom if isinstance(atom, Dim) else None
        return None

    def evaluate(self, sizes: dict) -> int:
        return evaluate(self, sizes)

    # ------------------------------------------------------------------ == and != are questions too
    def __eq__(self, other):
        return _equality(self, "==", other)

    def __ne__(self, other):
        return _equality(self, "!=", other)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):
        return Expr, (self.terms,)               # the hash is computed again: str hashes vary by process

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return _combine(self, other, 1) if _is_size(other) else NotImplemented

    def __radd__(self, other):
        return _combine(self, other, 1) if _is_size(other) else NotImplemented

    def __sub__(self, other):
        return _combine(self, other, -1) if _is_size(other) else NotImplemented

    def __rsub__(self, other):
        return _combine(-self, other, 1) if _is_size(other) else NotImplemented

    def __neg__(self):
        return _build({m: -c for m, c in self.terms})

    def __pos__(self):
        return self

    def __mul__(self, other):
        return _multiply(self, other) if _is_size(other) else NotImplemented

    def __rmul__(self, other):
        return _multiply(self, other) if _is_size(other) else NotImplemented

    def __floordiv__(self, other):
        if is_int(other) and other > 0:
            return floor_div(self, int(other))
        if isinstance(other, Expr):
            return exact_div(self, other)
        raise ShapeError(f"symbolic size {self}: only floor division by a positive int or exact division by a "
                         f"factor is supported, got // {other!r}")

    def __rfloordiv__(self, other):
        raise ShapeError(f"cannot divide {other!r} by the symbolic size {self}")

    def __mod__(self, other):
        if not (is_int(other) and other > 0):
            raise ShapeError(f"symbolic size {self}: only % by a positive int is supported, got % {other!r}")
        return self - int(other) * floor_div(self, int(other))

    def __truediv__(self, other):
        raise ShapeError(f"symbolic size {self}: true division (/) has no value while tracing; code that needs "
                         "the number (a divisor such as an unbiased variance's n / (n - 1)) cannot be traced with "
                         "symbolic dimensions (integer sizes divide with //)")

    __rtruediv__ = __truediv__

    # ------------------------------------------------------------------ questions shape rules ask
    def __lt__(self, other):
        return decide(self, "<", other)

    def __le__(self, other):
        return decide(self, "<=", other)

    def __gt__(self, other):
        return decide(self, ">", other)

    def __ge__(self, other):
        return decide(self, ">=", other)

    # ------------------------------------------------------------------ no value while tracing
    def _no_value(self, what: str):
        raise TraceError(f"{what}: the symbolic size {self} has no value while tracing; code that needs a concrete "
                         "number (NumPy arrays, constants or Python loops sized by it) cannot be traced with "
                         "symbolic dimensions")

    def __index__(self):
        self._no_value("index")

    def __int__(self):
        self._no_value("int()")

    def __float__(self):
        self._no_value("float()")

    def __bool__(self):
        return decide(self, "!=", 0)

    # ------------------------------------------------------------------ text
    def __str__(self) -> str:
        if self._text is None:
            self._text = self._format()
        return self._text

    def _format(self) -> str:
        modulo = _as_modulo(self)
        if modulo is not None:
            inner, k = modulo
            return f"{inner if inner.symbol else f'({inner})'} % {k}"
        parts = []
        for monomial, coeff in sorted(self.terms, key=lambda t: (not t[0], _monomial_key(t[0]))):
            text = _format_term(monomial, abs(coeff), leading_minus=coeff < 0 and not parts)
            if not parts:
                parts.append(text if coeff > 0 else f"-{text}")
            else:
                parts.append(f"{'+' if coeff > 0 else '-'} {text}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return str(self)


def _equality(a: Expr, op: str, b):
    """`a == b` / `a != b`: structural where the canonical forms agree, else the question (`decide`); a
    number that is not an integer is never a size; anything else is not comparable (NotImplemented)."""
    if isinstance(b, Expr) and a.terms == b.terms:
        return op == "=="
    if isinstance(b, numbers.Real) and not _is_size(b) and not isinstance(b, bool):
        if not float(b).is_integer():
            return op == "!="
        b = int(b)
    return decide(a, op, b) if _is_size(b) else NotImplemented


def same(a, b) -> bool:
    """Structural equality of sizes, or of tuples of them: equal canonical forms (never asks, records
    or raises; `2 * (D // 2)` and `D` are not the same). What types, constraints and keys compare by."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if isinstance(a, Expr) or isinstance(b, Expr):
        return isinstance(a, Expr) and isinstance(b, Expr) and a.terms == b.terms
    return a == b


def is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_size(x) -> bool:
    return isinstance(x, Expr) or is_int(x)


def is_symbolic(x) -> bool:
    """Whether `x` is a symbolic size (an Expr), or a tuple holding one."""
    if isinstance(x, (tuple, list)):
        return any(is_symbolic(v) for v in x)
    return isinstance(x, Expr)


def as_size(x):
    """A size as lucid stores it: an Expr unchanged, anything else as a Python int."""
    return x if isinstance(x, Expr) else int(x)


def _as_modulo(x: Expr):
    """(y, k) when x is `y - k*(y // k)`, which prints as `y % k`; else None."""
    divisions = [(m[0], c) for m, c in x.terms if len(m) == 1 and isinstance(m[0], _FloorDiv)]
    for atom, coeff in divisions:
        if coeff == -atom.divisor and same(x - atom.inner, coeff * Expr((((atom,), 1),))):
            return atom.inner, atom.divisor
    return None


def _monomial_key(monomial: tuple) -> tuple:
    return (-len(monomial), tuple(a.sort_key() for a in monomial))


def _format_term(monomial: tuple, coeff: int, leading_minus: bool = False) -> str:
    """A term's text; a division is parenthesised where an operator around it would bind first."""
    if not monomial:
        return str(coeff)
    factors = [str(a) for a in monomial]
    if len(factors) > 1 or coeff != 1 or leading_minus:
        factors = [f"({f})" if isinstance(a, _FloorDiv) else f for f, a in zip(factors, monomial)]
    return "*".join(([str(coeff)] if coeff != 1 else []) + factors)


def _terms(x) -> dict:
    return dict(x.terms) if isinstance(x, Expr) else ({(): int(x)} if int(x) else {})


def _build(terms: dict):
    """The canonical value of a term map: an int when no symbol is left, else an Expr."""
    kept = {m: c for m, c in terms.items() if c}
    if all(not m for m in kept):
        return kept.get((), 0)
    return Expr(tuple(sorted(kept.items(), key=lambda t: _monomial_key(t[0]))))


def _combine(a, b, sign: int):
    terms = _terms(a)
    for m, c in _terms(b).items():
        terms[m] = terms.get(m, 0) + sign * c
    return _build(terms)


def _multiply(a, b):
    terms: dict = {}
    for ma, ca in _terms(a).items():
        for mb, cb in _terms(b).items():
            m = tuple(sorted(ma + mb, key=lambda atom: atom.sort_key()))
            terms[m] = terms.get(m, 0) + ca * cb
    return _build(terms)


def floor_div(x, k: int):
    """`x // k` for a positive int k, simplified (see the module docstring)."""
    if not isinstance(x, Expr):
        return int(x) // k
    if k == 1:
        return x
    whole, rest = {}, {}
    for m, c in x.terms:
        if m and c % k == 0:
            whole[m] = c // k
        elif m:
            rest[m] = c
    constant = dict(x.terms).get((), 0)
    whole[()] = constant // k
    rest[()] = constant % k
    remainder = _build(rest)
    if not isinstance(remainder, Expr):
        return _build(whole) + remainder // k
    nested = [(m, c) for m, c in remainder.terms if m]
    if len(nested) == 1 and nested[0][1] == 1 and len(nested[0][0]) == 1 and isinstance(nested[0][0][0], _FloorDiv):
        inner = nested[0][0][0]                  # (y // a + c) // k == (y + c*a) // (a*k)
        return _build(whole) + floor_div(inner.inner + rest[()] * inner.divisor, inner.divisor * k)
    return _build(whole) + Expr((((_FloorDiv(remainder, k),), 1),))


def ceil_div(x, k: int):
    """The ceiling of x / k for a positive int k."""
    return floor_div(x + (k - 1), k) if isinstance(x, Expr) else -(-int(x) // k)


def slice_indices(key: slice, n) -> tuple:
    """`key.indices(n)` for a size that may be symbolic (a symbolic size takes positive steps only)."""
    if not isinstance(n, Expr):
        return key.indices(n)
    step = 1 if key.step is None else int(key.step)
    if step < 1:
        raise ShapeError(f"slicing the symbolic size {n}: only positive steps are supported, got {step}")
    return _clamped(key.start, 0, n), _clamped(key.stop, n, n), step


def _clamped(index, default, n):
    if index is None:
        return default
    index = int(index)
    return max(n + index, 0) if index < 0 else min(index, n)


def exact_div(a, b):
    """a / b where b is one monomial dividing every term of a (`N*C*D // N == C*D`); ShapeError otherwise."""
    terms_b = _terms(b)
    if len(terms_b) == 1:
        (mb, cb), = terms_b.items()
        quotient = {}
        for m, c in _terms(a).items():
            rest = list(m)
            if c % cb or not all(_remove(rest, atom) for atom in mb):
                break
            quotient[tuple(rest)] = c // cb
        else:
            return _build(quotient)
    raise ShapeError(f"cannot divide the size {a} by {b}: it is not a factor of every term")


def _remove(atoms: list, atom) -> bool:
    if atom in atoms:
        atoms.remove(atom)
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Values


def free_symbols(x) -> frozenset:
    """The Dims an expression (or a tuple of sizes) mentions."""
    if isinstance(x, (tuple, list)):
        return frozenset().union(*(free_symbols(v) for v in x))
    if not isinstance(x, Expr):
        return frozenset()
    found = set()
    for monomial, _ in x.terms:
        for atom in monomial:
            found |= {atom} if isinstance(atom, Dim) else free_symbols(atom.inner)
    return frozenset(found)


def fold(x, number, symbol, floor_div, times, plus):
    """A size (an int or an Expr) rebuilt in another form from its canonical terms: `number(k)` for
    an int (a constant, a coefficient), `symbol(dim)`, `floor_div(inner, k)` of an atom's folded
    inner size, `times(a, b)` and `plus(a, b)` (each term is its coefficient times its atoms, left to
    right, and the terms are added in order). Evaluation, and the Python, C and LLVM forms of a size,
    are folds."""
    if not isinstance(x, Expr):
        return number(int(x))
    total = None
    for monomial, coeff in x.terms:
        term = number(coeff)
        for atom in monomial:
            term = times(term, symbol(atom) if isinstance(atom, Dim) else
                         floor_div(fold(atom.inner, number, symbol, floor_div, times, plus), atom.divisor))
        total = term if total is None else plus(total, term)
    return number(0) if total is None else total


def evaluate(x, sizes: dict):
    """The int value of a size (or each size of a tuple) with symbols named in `sizes` (name -> int)."""
    if isinstance(x, tuple):
        return tuple(evaluate(v, sizes) for v in x)
    if not isinstance(x, Expr):
        return x                                  # any other value (an attribute's bool...) as it is

    def value_of(dim: Dim) -> int:
        if dim.name not in sizes:
            raise ShapeError(f"no size given for the symbolic dimension {dim.name}")
        return int(sizes[dim.name])

    return fold(x, int, value_of, operator.floordiv, operator.mul, operator.add)


def python_source(x) -> str:
    """Python expression text computing a size (an int or an Expr) from its symbols' names."""
    return fold(x, str, lambda dim: dim.name, lambda inner, k: f"(({inner}) // {k})",
                lambda a, b: f"{a}*{b}", lambda a, b: f"({a} + {b})")


def evaluator(sizes: list, names: tuple):
    """A function of the symbols' values (positional, in `names` order) returning the tuple of the
    values of `sizes` (ints or Exprs over those symbols): one compiled Python expression, for code
    that evaluates many sizes per call (`evaluate` walks each term). The text comes from canonical
    Exprs, whose names are checked identifiers (`Dim`), and runs without builtins."""
    source = f"lambda {', '.join(names)}: ({''.join(python_source(size) + ', ' for size in sizes)})"
    return eval(compile(source, "<lucid sizes>", "eval"), {"__builtins__": {}})  # noqa: S307 (our own text)


def bounds(x) -> tuple:
    """(lowest, highest) values of a size over the symbols' ranges (math.inf when unbounded); an
    interval estimate, so the true range may be narrower."""
    if not isinstance(x, Expr):
        return int(x), int(x)
    offset = _modulo_offset(x)
    if offset is not None:
        return offset
    lo = hi = 0
    for monomial, coeff in x.terms:
        term = (1, 1)
        for atom in monomial:
            term = _interval_product(term, atom._bounds())
        low, high = _interval_product(term, (coeff, coeff))
        lo, hi = lo + low, hi + high
    return lo, hi


def _modulo_offset(x: Expr):
    """(c, c + k - 1) when x is `y % k + c` (`y - k*(y // k) + c`, y holding a constant of its own
    or not: `(D + 1) % 2` is `D + 1 - 2*((D + 1) // 2)`); else None."""
    for monomial, coeff in x.terms:
        if len(monomial) == 1 and isinstance(monomial[0], _FloorDiv) and coeff == -monomial[0].divisor:
            atom = monomial[0]
            rest = x - coeff * Expr(((monomial, 1),)) - atom.inner
            if not isinstance(rest, Expr):
                return rest, rest + atom.divisor - 1
    return None


def _interval_product(a: tuple, b: tuple) -> tuple:
    products = [0 if 0 in (x, y) else x * y for x in a for y in b]
    return min(products), max(products)


def reference_sizes(symbols) -> dict:
    """The reference point: each symbol at its minimum."""
    return {s.name: s.min for s in symbols}


# ---------------------------------------------------------------------------------------------
# Constraints and the questions shape rules ask


class Constraint(NamedTuple):
    """`expr op bound`: op one of '>=', '<=', '==', '!='; expr a canonical size without constant."""

    expr: object
    op: str
    bound: int

    def holds(self, sizes: dict) -> bool:
        return _COMPARE[self.op](evaluate(self.expr, sizes), self.bound)

    @property
    def symbols(self) -> frozenset:
        return free_symbols(self.expr)

    def __eq__(self, other) -> bool:
        return isinstance(other, Constraint) and (self.op, self.bound) == (other.op, other.bound) \
            and same(self.expr, other.expr)

    def __ne__(self, other) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __str__(self) -> str:
        return f"{self.expr} {self.op} {self.bound}"


_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def constraint(a, op: str, b) -> Constraint:
    """The canonical constraint saying `a op b` (see `Constraint`)."""
    diff = a - b
    constant = _terms(diff).get((), 0)
    expr, bound = diff - constant, -constant
    if isinstance(expr, Expr) and expr.terms[0][1] < 0:
        expr, bound, op = -expr, -bound, _FLIPPED[op]
    if op == ">":
        op, bound = ">=", bound + 1
    elif op == "<":
        op, bound = "<=", bound - 1
    return _peeled(Constraint(expr, op, bound))


def _peeled(c: Constraint) -> Constraint:
    """`y // k >= b` as `y >= k*b` (and `<=` likewise), repeatedly."""
    terms = c.expr.terms if isinstance(c.expr, Expr) else ()
    if c.op in (">=", "<=") and len(terms) == 1 and terms[0][1] == 1 and len(terms[0][0]) == 1 \
            and isinstance(terms[0][0][0], _FloorDiv):
        atom = terms[0][0][0]
        bound = atom.divisor * c.bound + (atom.divisor - 1 if c.op == "<=" else 0)
        return constraint(atom.inner, c.op, bound)
    return c


def parse_constraint(text: str, dims: dict) -> Constraint:
    """Read `str(constraint)` back (`D >= 3`); ShapeError if it is not one."""
    for op in (">=", "<=", "==", "!="):
        left, found, right = text.partition(f" {op} ")
        if found:
            c = Constraint(parse_expression(left, dims), op, _parse_int(right.strip()))
            if constraint(c.expr, op, c.bound) != c:
                raise ShapeError(f"the constraint {text!r} is not in canonical form ({constraint(c.expr, op, c.bound)})")
            return c
    raise ShapeError(f"expected a constraint 'size OP int' (OP one of >=, <=, ==, !=), got {text!r}")


def _parse_int(text: str) -> int:
    value = _evaluate_ast(_parse(text), {})
    if not is_int(value):
        raise ShapeError(f"expected an int, got {text!r}")
    return value


_recorders = threading.local()


@contextmanager
def recording(into: list | None = None):
    """Collect the constraints that questions asked inside the block record (innermost block wins)."""
    into = [] if into is None else into
    stack = _recorders.__dict__.setdefault("stack", [])
    stack.append(into)
    try:
        yield into
    finally:
        stack.pop()


def _record(c: Constraint) -> None:
    stack = getattr(_recorders, "stack", None)
    if stack and c not in stack[-1]:
        stack[-1].append(c)


def decide(a, op: str, b, what: str = "") -> bool:
    """The answer to `a op b` for sizes, by the rule of the module docstring (recording what it assumed)."""
    diff = a - b
    if not isinstance(diff, Expr):
        return _COMPARE[op](diff, 0)
    known = _decided_by_bounds(diff, op)
    if known is not None:
        return known
    symbols = sorted(s.name for s in free_symbols(diff))
    question = f"{what}{': ' if what else ''}{a} {op} {b}"
    if len(symbols) > 1:
        raise ShapeError(f"{question} depends on the symbolic dimensions {' and '.join(symbols)} together; "
                         "a graph cannot assume a relation between two symbolic dimensions (make them one "
                         "dimension or concrete)")
    pinned = constraint(a, "==", b).expr
    if op in ("==", "!=") and len(pinned.terms) == 1 and isinstance(pinned.terms[0][0], tuple) \
            and len(pinned.terms[0][0]) == 1 and isinstance(pinned.terms[0][0][0], Dim):
        raise ShapeError(f"{question} would fix the symbolic dimension {symbols[0]} to one value; "
                         f"declare {symbols[0]} as that concrete size instead")
    answer = _COMPARE[op](evaluate(diff, reference_sizes(free_symbols(diff))), 0)
    _record(constraint(a, op if answer else _NEGATED[op], b))
    return answer


def _decided_by_bounds(diff: Expr, op: str):
    lo, hi = bounds(diff)
    if op in ("<", ">="):
        answer = True if lo >= 0 else False if hi < 0 else None
        return answer if answer is None or op == ">=" else not answer
    if op in (">", "<="):
        answer = True if lo > 0 else False if hi <= 0 else None
        return answer if answer is None or op == ">" else not answer
    if lo > 0 or hi < 0:
        return op == "!="
    return None


def equal(a, b, what: str = "") -> bool:
    """Whether sizes a and b are equal: structural equality, else the rule's answer (recorded); `a == b`
    with `what` naming the question in a refusal."""
    return same(a, b) or (is_symbolic(a) or is_symbolic(b)) and decide(a, "==", b, what)


def broadcast_dims(dims, what: str = "broadcast"):
    """The broadcast of one axis's sizes (see the module docstring); ShapeError when they do not broadcast."""
    result = 1
    for d in dims:
        if same(result, 1) or same(d, result):
            result = d
        elif not same(d, 1):
            symbolic = [str(x) for x in (result, d) if isinstance(x, Expr)]
            if symbolic:
                raise ShapeError(f"{what}: cannot broadcast {result} against {d}: the symbolic size "
                                 f"{' and '.join(symbolic)} would have to equal the other; a symbolic dimension "
                                 "broadcasts only against 1 or itself")
            raise ShapeError(f"{what}: cannot broadcast {result} against {d}")
    return result


def broadcast_shapes(*shapes: tuple, what: str = "broadcast") -> tuple:
    """NumPy broadcasting of shapes that may hold symbolic sizes."""
    rank = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return tuple(broadcast_dims(column, what) for column in zip(*padded))


# ---------------------------------------------------------------------------------------------
# Text


def parse_expression(text: str, dims: dict):
    """Read a size written in Python syntax (`(D + 1) // 2`, `2*N`) with symbols from `dims` (name ->
    Dim). Nothing is evaluated: only ints, names, + - * // and ceil_div(e, k). ShapeError otherwise."""
    return _evaluate_ast(_parse(text), dims)


def _parse(text: str) -> ast.expr:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ShapeError(f"not a size expression: {text[:60]!r}") from None


_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}
_DIVISIONS = {ast.FloorDiv: floor_div, ast.Mod: lambda a, k: a % k}


def _evaluate_ast(node, dims: dict):
    if isinstance(node, ast.Constant) and is_int(node.value):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in dims:
            raise ShapeError(f"unknown symbolic dimension {node.id!r}; declared: {', '.join(sorted(dims)) or 'none'}")
        return Expr((((dims[node.id],), 1),))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate_ast(node.operand, dims)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate_ast(node.left, dims), _evaluate_ast(node.right, dims))
    if isinstance(node, ast.BinOp) and type(node.op) in _DIVISIONS:
        left, right = _evaluate_ast(node.left, dims), _evaluate_ast(node.right, dims)
        if not (is_int(right) and right > 0):
            raise ShapeError(f"a size may be divided by a positive int only, got {ast.unparse(node)[:60]!r}")
        return _DIVISIONS[type(node.op)](left, right)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ceil_div"
            and len(node.args) == 2 and not node.keywords):
        return ceil_div(_evaluate_ast(node.args[0], dims), _positive(_evaluate_ast(node.args[1], dims)))
    raise ShapeError(f"not a size expression: {ast.unparse(node)[:60]!r}")


def _positive(k) -> int:
    if not (is_int(k) and k > 0):
        raise ShapeError(f"expected a positive int divisor, got {k}")
    return k


def dim(name: str, min: int = 1, max: int | None = None) -> Expr:
    """A symbolic dimension for `lucid.spec`: `lucid.dim("N")`, `lucid.dim("D", min=16, max=256)`."""
    return Expr((((Dim(name, min, max),), 1),))
