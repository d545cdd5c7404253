"""The parts of a transformer, recognised in its traced program by their operations.

Each part is found by the operations that define it mathematically, wherever the code puts
them (a Flax module, a plain function, a loop body):

* **attention**: a softmax, i.e. ``exp`` normalised by its own sum (``div`` by a ``reduce_sum`` of
  the exponentials), whose input comes from a product (the scores, ``dot_general``: queries and
  keys) and whose output is multiplied into a product (the values), through at most a few
  scalings, masks, casts and reshapes (eq. 4-5 of the paper; any number of heads: the products'
  batch dimensions);
* **layer norm / RMS norm**: ``sqrt`` or ``rsqrt`` of a sum of squares of a data-dependent value,
  plus an epsilon where a literal is added on the way (eq. 1; eq. 8 for RMS).  It is a layer
  norm when the squared value is centred (its mean is subtracted, or, as Flax's fast variance
  does, the mean of the same value is also taken), an RMS norm otherwise;
* **perceptron**: an activation (ReLU = ``max`` with 0, GELU = ``erf`` or the ``tanh`` form, SiLU
  and sigmoid = ``logistic``) between two products (eq. 3);
* **residual addition**: an ``add`` of a part's result (after an output projection and a bias at
  most) and a value computed before the part began (eq. 6).

"Data-dependent" means computed from the model's inputs (not only from weights and constants).
Parts are attributed to the innermost module call that contains them (``structure.scopes``)
and to a layer: the first integer in that module's path ("blocks.3.attn" is layer 3; without a
module, in the named scopes: "layer3", "block_3" or "h_3" is layer 3), or, for a
part inside a loop (the paper's network scans over its layers), to the loop: recognised in
every iteration, with values that are per iteration.  Module calls with floating-point
operations that hold no recognised part are listed as unrecognised, with what was found.
"""

from __future__ import annotations

import dataclasses
import math
import re

from boundlab.structure.program import Program
from boundlab.structure.scopes import MARK

TRANSPARENT = {"mul", "div", "add", "sub", "select_n", "convert_element_type", "reshape", "transpose",
               "broadcast_in_dim", "squeeze", "expand_dims", "stop_gradient", "copy", "copy_p", "neg",
               "optimization_barrier", "reduce_precision", "max", "min", "clamp", "pjit", "integer_pow",
               "square", "sqrt", "rsqrt"}
ACTIVATIONS = {"erf": "gelu (erf)", "tanh": "tanh", "logistic": "sigmoid", "max": "relu"}
ROUNDED = {"add", "sub", "mul", "div", "dot_general", "reduce_sum", "exp", "sqrt", "rsqrt", "erf", "tanh", "logistic",
           "log", "integer_pow", "square", "pow"}
KINDS = ("attention", "layer_norm", "rms_norm", "perceptron")


@dataclasses.dataclass(frozen=True)
class Part:
    """One recognised part.

    kind: "attention", "layer_norm", "rms_norm" or "perceptron"; name: unique label
    ("blocks.0.attn:attention"); module: the innermost module path holding it ("" for none);
    layer: its layer index (None when the path has none); in_loop: inside a scan/while/cond
    (recognised every iteration; values are per iteration and not recorded); scope: the name
    stack; details: (key, value) pairs (eps, activation, head dimension, residual, ...);
    values: (role, id) pairs of the program values that define it (queries, keys, scores,
    probabilities, values for attention; input for a norm; hidden, weights for a perceptron).
    """

    kind: str
    name: str
    module: str
    layer: int | None
    in_loop: bool
    scope: str
    details: tuple
    values: tuple
    node_scopes: tuple = ()
    entry: tuple = ()
    exit: int = -1

    def detail(self, key, default=None):
        return dict(self.details).get(key, default)

    def value(self, role):
        return dict(self.values)[role]


@dataclasses.dataclass(frozen=True)
class ModuleCall:
    """A submodule call seen through its marks: path, class name, marked input and output ids."""

    path: str
    type: str
    inputs: tuple
    outputs: tuple


@dataclasses.dataclass(frozen=True)
class Structure:
    """What was recognised: ``parts`` (in program order), ``modules`` (calls seen), ``unrecognised``
    ((path, class, reason) of module calls holding floating-point work but no part) and ``notes``
    (what the model lacks, e.g. no attention)."""

    parts: tuple
    modules: tuple
    unrecognised: tuple
    notes: tuple

    def of_kind(self, kind):
        return tuple(p for p in self.parts if p.kind == kind)

    @property
    def layers(self) -> tuple:
        return tuple(sorted({p.layer for p in self.parts if p.layer is not None}))

    def summary(self) -> str:
        """One line per part, then what was not recognised."""
        lines = [f"{p.name}: {p.kind}" + (f" (layer {p.layer})" if p.layer is not None else "")
                 + (" [in a loop]" if p.in_loop else "")
                 + "".join(f", {k}={v}" for k, v in p.details) for p in self.parts]
        lines += [f"{path} ({kind}): not recognised: {why}" for path, kind, why in self.unrecognised]
        return "\n".join(lines + list(self.notes))


def recognise(program: Program, data_inputs, module_types=None) -> Structure:
    """The parts of ``program`` (see the module docstring).  ``data_inputs``: positions of the
    function's flat arguments that are data (the rest are weights); ``module_types``: path ->
    class name of the submodules, for the records."""
    finder = _Finder(program, set(data_inputs), module_types or {})
    return finder.run()


def data_dependent(program: Program, data_inputs) -> set:
    """The ids computed from the data inputs (positions among the program's inputs)."""
    found = set(program.inputs[i] for i in data_inputs)
    for node in program.nodes:  # nodes are in data-flow order; loop bodies follow their loop
        if any(is_data(program, found, i) for i in node.inputs):
            found.update(node.outputs)
    return found


def is_data(program: Program, found: set, ident) -> bool:
    """``ident`` is in ``found``, or is a loop body's input whose outer operand is."""
    while ident not in found and ident in program.origin:
        ident = program.origin[ident]
    return ident in found


class _Finder:
    def __init__(self, program: Program, data_inputs, module_types):
        self.p = program
        self.module_types = module_types
        self.tainted = data_dependent(program, data_inputs)
        self.modules = self._module_calls()
        self.paths = {m.path for m in self.modules}

    def _is_tainted(self, ident):
        return is_data(self.p, self.tainted, ident)

    def _float(self, ident):
        dtype = self.p.dtypes.get(ident)
        return dtype is not None and getattr(dtype, "kind", "") == "f"

    # -- walking the data flow ------------------------------------------------------------
    def _back(self, ident, want, depth=6):
        """Breadth-first up the data-dependent operands from ``ident``, through transparent
        operations; the first node whose primitive is in ``want`` (or None)."""
        frontier, seen = [ident], set()
        for _ in range(depth):
            nxt = []
            for v in frontier:
                node = self.p.node_of(v)
                if node is None or id(node) in seen:
                    continue
                seen.add(id(node))
                if node.primitive in want:
                    return node
                if node.primitive in TRANSPARENT:
                    nxt += [i for i in node.inputs if self._is_tainted(i) and self._float(i)]
            frontier = nxt
        return None

    def _ancestors(self, ident, depth=5):
        """Nodes up to ``depth`` steps up the data-dependent operands of ``ident``."""
        found, frontier = [], [ident]
        for _ in range(depth):
            nxt = []
            for v in frontier:
                node = self.p.node_of(v)
                if node is not None and node not in found:
                    found.append(node)
                    nxt += [i for i in node.inputs if self._is_tainted(i)]
            frontier = nxt
        return found

    def _downstream(self, ident, depth, through):
        """(node, value it uses) breadth-first down the uses of ``ident``, at most ``depth`` steps,
        going on only through the primitives ``through``."""
        frontier, seen = [ident], set()
        for _ in range(depth):
            nxt = []
            for v in frontier:
                for node in self.p.uses(v):
                    if id(node) in seen:
                        continue
                    seen.add(id(node))
                    yield node, v
                    if node.primitive in through:
                        nxt += list(node.outputs)
            frontier = nxt

    def _forward(self, ident, want, depth=4, through=TRANSPARENT):
        """The first node down from ``ident`` whose primitive is in ``want``, and the value it uses."""
        for node, v in self._downstream(ident, depth, through - set(want)):
            if node.primitive in want:
                return node, v
        return None, None

    def _index(self, node):
        return self.p.producer[node.outputs[0]][0]

    # -- parts ----------------------------------------------------------------------------
    def run(self) -> Structure:
        parts = []
        softmax_scopes = []
        for node in self.p.nodes:
            if not node.outputs or not self._is_tainted(node.outputs[0]) or not self._float(node.outputs[0]):
                continue
            if node.primitive == "exp":
                part = self._attention(node, softmax_scopes)
            elif node.primitive in ("sqrt", "rsqrt"):
                part = self._norm(node)
            elif node.primitive in ACTIVATIONS:
                part = self._perceptron(node)
            else:
                part = None
            if part is not None:
                parts.append(part)
        parts = _unique_names(parts)
        notes = []
        if not any(p.kind == "attention" for p in parts):
            notes.append("no attention block: no softmax (exp normalised by its own sum) between two products "
                         "in the traced program" + (f"; softmax without products at {softmax_scopes}"
                                                    if softmax_scopes else ""))
        return Structure(tuple(parts), tuple(self.modules), self._unrecognised(parts), tuple(notes))

    def _place(self, nodes):
        scopes = [n.scope for n in nodes]
        common = scopes[0].split("/")
        for s in scopes[1:]:
            parts = s.split("/")
            k = 0
            while k < min(len(common), len(parts)) and common[k] == parts[k]:
                k += 1
            common = common[:k]
        module = next((c for c in reversed(common) if c in self.paths), "")
        in_loop = any(n.region for n in nodes)
        layer = _layer_index(module.split(".") if module else common)
        return module, layer, in_loop, "/".join(common)

    def _make(self, kind, nodes, details, values, entry, exit_node):
        module, layer, in_loop, scope = self._place(nodes)
        base = module or scope or "model"
        return Part(kind, f"{base}:{kind}", module, layer, in_loop, scope, tuple(details), tuple(values),
                    tuple(n.scope for n in nodes), tuple(sorted({self._index(n) for n in entry})),
                    self._index(exit_node))

    def _attention(self, exp, softmax_scopes):
        out = exp.outputs[0]
        masking = {"convert_element_type", "select_n", "broadcast_in_dim"}
        summed, _ = self._forward(out, {"reduce_sum"}, depth=3, through=masking)
        if summed is None:
            return None
        divide, _ = self._forward(out, {"div"}, depth=3, through=masking | {"reduce_sum"})
        if divide is None or self._back(divide.inputs[1], {"reduce_sum"}, depth=4) is not summed:
            return None
        scores = exp.inputs[0]
        shifted = self.p.node_of(scores)
        if shifted is not None and shifted.primitive == "sub" and self._back(shifted.inputs[1], {"reduce_max"}, 6):
            scores = shifted.inputs[0]
        score_product = self._back(scores, {"dot_general"}, depth=6)
        value_product, via = self._forward(divide.outputs[0], {"dot_general"}, depth=4)
        if score_product is None or value_product is None:
            softmax_scopes.append(exp.scope)
            return None
        probabilities = divide.outputs[0]
        values = [i for i in value_product.inputs if i != via][0]
        (contract, _), _ = score_product.eqn.params["dimension_numbers"]
        lhs_shape = self.p.shapes[score_product.inputs[0]]
        details = [("head_dim", math.prod(lhs_shape[i] for i in contract)),
                   ("softmax_axes", tuple(int(a) for a in summed.eqn.params["axes"]))]
        residual = self._residual(value_product, score_product)
        if residual is not None:
            details.append(("residual", residual))
        return self._make("attention", [score_product, exp, divide, value_product], details,
                          [("queries", score_product.inputs[0]), ("keys", score_product.inputs[1]),
                           ("products", score_product.outputs[0]), ("scores", scores),
                           ("probabilities", probabilities), ("values", values),
                           ("attention", value_product.outputs[0])], [score_product], value_product)

    def _norm(self, root):
        if not self._float(root.inputs[0]):
            return None
        above = self._ancestors(root.inputs[0], depth=6)
        eps = next((value for n in above if n.primitive == "add" for i in n.inputs
                    if (value := self._literal(i)) is not None and value > 0), 0.0)
        sums = [n for n in above if n.primitive == "reduce_sum"]
        squared = None
        for s in sums:
            sq = self.p.node_of(s.inputs[0])
            while sq is not None and sq.primitive == "convert_element_type":
                sq = self.p.node_of(sq.inputs[0])
            if sq is None:
                continue
            if (sq.primitive == "integer_pow" and sq.eqn.params.get("y") == 2) or sq.primitive == "square" or \
                    (sq.primitive == "mul" and sq.inputs[0] == sq.inputs[1]):
                squared = sq.inputs[0]
                break
        if squared is None:
            return None
        centring = self.p.node_of(squared)
        kind, source = "rms_norm", squared
        mean_of = self._mean_subtracted(centring)
        if mean_of is not None:
            kind, source = "layer_norm", mean_of  # the mean subtracted, then squared
        elif any(u.primitive == "reduce_sum" for u in self.p.uses(squared)):
            kind = "layer_norm"  # mean(x^2) - mean(x)^2 (Flax's fast variance): the mean of x is taken too
        axes = next((tuple(int(a) for a in s.eqn.params["axes"]) for s in sums), ())
        nodes = [n for n in [self.p.node_of(squared), root] if n is not None]
        normalised, _ = self._forward(root.outputs[0], {"mul", "div"}, depth=3,
                                      through={"broadcast_in_dim", "convert_element_type", "optimization_barrier"})
        exit_node = normalised or root
        entry = [n for n in self.p.uses(source) if self._index(n) <= self._index(exit_node)]
        return self._make(kind, nodes, [("eps", eps), ("axes", axes)],
                          [("input", source), ("output", exit_node.outputs[0])], entry or [root], exit_node)

    def _literal(self, ident):
        """The Python value of a literal, also one passed into a jitted function and converted or
        broadcast there (a block's ``eps`` argument), else None."""
        for _ in range(4):
            if ident in self.p.literals:
                return self.p.literals[ident]
            node = self.p.node_of(ident)
            if node is None or node.primitive not in ("convert_element_type", "broadcast_in_dim", "reshape"):
                return None
            ident = node.inputs[0]
        return None

    def _mean_subtracted(self, node):
        """x when ``node`` computes x - mean(x) (``sub``, or ``add`` of a negated mean), else None."""
        if node is None or node.primitive not in ("sub", "add"):
            return None
        for i, j in ((0, 1), (1, 0)) if node.primitive == "add" else ((0, 1),):
            chain = self._ancestors(node.inputs[j], depth=5)
            total = next((n for n in chain if n.primitive == "reduce_sum"), None)
            negated = node.primitive == "sub" or any(n.primitive == "neg" for n in chain)
            if total is not None and negated and total.inputs[0] == node.inputs[i]:
                return node.inputs[i]
        return None

    def _perceptron(self, act):
        if act.primitive == "max" and not any(self.p.literals.get(i) == 0.0 for i in act.inputs):
            return None
        first = self._back(act.inputs[0] if act.primitive != "max" else
                           next(i for i in act.inputs if self._is_tainted(i)), {"dot_general"}, depth=8)
        second, _ = self._forward(act.outputs[0], {"dot_general"}, depth=8)
        if first is None or second is None:
            return None
        name = ACTIVATIONS[act.primitive]
        if act.primitive == "tanh" and any(
                (n.primitive == "integer_pow" and n.eqn.params.get("y") == 3)
                or any(abs(self.p.literals.get(i, 0.0) - 0.044715) < 1e-6 for i in n.inputs)
                for n in self._ancestors(act.inputs[0], depth=6)):
            name = "gelu (tanh)"  # tanh(sqrt(2/pi) (x + 0.044715 x^3))
        if act.primitive == "logistic" and any(u.primitive == "mul" and act.inputs[0] in u.inputs
                                               for u in self.p.uses(act.outputs[0])):
            name = "silu"
        weights = [next((i for i in n.inputs if not self._is_tainted(i)), None) for n in (first, second)]
        details = [("activation", name)]
        residual = self._residual(second, first)
        if residual is not None:
            details.append(("residual", residual))
        values = [("hidden", act.outputs[0]), ("output", second.outputs[0])]
        values += [(f"W{k + 1}", w) for k, w in enumerate(weights) if w is not None]
        return self._make("perceptron", [first, act, second], details, values, [first], second)

    def _residual(self, exit_node, entry_node, depth=10):
        """The scope of the residual addition after ``exit_node`` (a part's last product): an add
        of its result and a data value computed before ``entry_node`` began; or None."""
        start = self._index(entry_node)
        for node, v in self._downstream(exit_node.outputs[0], depth, TRANSPARENT | {"dot_general"}):
            if node.primitive in ("add", "add_any"):
                other = [i for i in node.inputs if i != v]
                producer = self.p.producer.get(other[0]) if other else None
                if other and self._is_tainted(other[0]) and (producer is None or producer[0] < start):
                    return node.scope or "model"
        return None

    # -- modules --------------------------------------------------------------------------
    def _module_calls(self):
        marks: dict = {}
        for node in self.p.nodes:
            if node.primitive != "optimization_barrier":
                continue
            last = node.scope.split("/")[-1]
            if last.startswith(MARK):
                path, side = last[len(MARK):].rsplit(":", 1)
                marks.setdefault(path, {"in": (), "out": ()})[side] += tuple(node.outputs)
        return [ModuleCall(path, self.module_types.get(path, "?"), ends["in"], ends["out"])
                for path, ends in marks.items()]

    def _unrecognised(self, parts):
        homes = {p.module for p in parts if p.module}
        scopes = [set(scope.split("/")) for p in parts for scope in p.node_scopes]
        found = []
        for module in self.modules:
            related = any(module.path in components for components in scopes) or any(
                h == module.path or h.startswith(module.path + ".") or module.path.startswith(h + ".") for h in homes)
            if related:
                continue
            inside = [n.primitive for n in self.p.nodes if module.path in n.scope.split("/") and n.primitive in ROUNDED]
            if not inside:
                continue
            counts = {name: inside.count(name) for name in sorted(set(inside))}
            what = ", ".join(f"{name} x{count}" for name, count in counts.items())
            found.append((module.path, module.type,
                          f"no softmax between products, normalisation or activation between products among its "
                          f"operations ({what})"))
        return tuple(found)


def part_nodes(program: Program, part: Part) -> list:
    """Indices of the operations of ``part``: the nodes that depend on an entry node and that the
    exit node depends on (the data flow between them, entry and exit included)."""
    if not part.entry or part.exit < 0:
        return []
    low, high = min(part.entry), part.exit
    after = set(part.entry)
    for index in range(low, high + 1):
        node = program.nodes[index]
        if index in after or any(program.producer.get(i, (-1,))[0] in after for i in node.inputs):
            after.add(index)
    before, frontier = {high}, [high]
    while frontier:
        node = program.nodes[frontier.pop()]
        for ident in node.inputs:
            found = program.producer.get(ident)
            if found is not None and low <= found[0] and found[0] not in before:
                before.add(found[0])
                frontier.append(found[0])
    return sorted(after & before)


def _layer_index(components):
    """The layer of a path: its first component that is an integer ("blocks.3.attn" -> 3) or a
    layer's name with a number ("layer3", "layers_3", "block3", "h_3"; scopes of transformed
    functions such as "vmap(layer3)" unwrapped), or None."""
    for component in components:
        while True:
            unwrapped = re.fullmatch(r"\w+\((.*)\)", component)
            if unwrapped is None:
                break
            component = unwrapped.group(1)
        match = re.fullmatch(r"(?:layers?|blocks?|h)?[._]?(\d+)", component, flags=re.IGNORECASE)
        if match:
            return int(match.group(1))
    return None


def _unique_names(parts):
    seen: dict = {}
    out = []
    for part in parts:
        count = seen.get(part.name, 0)
        seen[part.name] = count + 1
        out.append(part if count == 0 else dataclasses.replace(part, name=f"{part.name}#{count}"))
    return out

