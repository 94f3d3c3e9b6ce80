"""The expression tree, and the parser that builds it from Python's own ``ast`` through a whitelist.

Nothing is ever evaluated by Python: the text is parsed with ``ast.parse(mode="eval")`` and every
node is either converted to one of the small dataclasses below or refused with a message that
names the construct and its place (a 0-based character offset into the text).
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from dataclasses import dataclass, field

from models.errors import ExpressionError

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_DEPTH",
    "Arith",
    "BoolOp",
    "Call",
    "Compare",
    "Expr",
    "FieldRef",
    "ListLiteral",
    "Literal",
    "Name",
    "Neg",
    "Not",
    "children",
    "parse",
]

Value = bool | int | float | str | None


@dataclass(eq=False)
class Expr:
    """A node of a parsed expression: where it starts in the text (``offset``) and its text (``src``).

    ``type`` is filled in by ``check()``; evaluation and SQL compilation need it."""

    offset: int
    src: str
    type: str | None = field(default=None, init=False, repr=False)


@dataclass(eq=False)
class Literal(Expr):
    value: Value


@dataclass(eq=False)
class ListLiteral(Expr):  # only on the right of `in` / `not in`
    items: list[Literal]


@dataclass(eq=False)
class Name(Expr):  # a record: account, contact, enrollment
    name: str


@dataclass(eq=False)
class FieldRef(Expr):  # account.arr, last_survey("nps").score
    record: Expr
    name: str


@dataclass(eq=False)
class Call(Expr):
    func: str
    args: list[Expr]


@dataclass(eq=False)
class Not(Expr):
    operand: Expr


@dataclass(eq=False)
class Neg(Expr):
    operand: Expr


@dataclass(eq=False)
class BoolOp(Expr):
    op: str  # and | or
    operands: list[Expr]


@dataclass(eq=False)
class Arith(Expr):
    op: str  # + - * /
    left: Expr
    right: Expr


@dataclass(eq=False)
class Compare(Expr):
    op: str  # == != < <= > >= | in, not in | is none, is not none (right is None)
    left: Expr
    right: Expr | None


def children(node: Expr) -> list[Expr]:
    """The direct sub-expressions of ``node``."""
    match node:
        case ListLiteral(items=items):
            return list(items)
        case FieldRef(record=record):
            return [record]
        case Call(args=args):
            return list(args)
        case Not(operand=operand) | Neg(operand=operand):
            return [operand]
        case BoolOp(operands=operands):
            return list(operands)
        case Arith(left=left, right=right):
            return [left, right]
        case Compare(left=left, right=right):
            return [left] if right is None else [left, right]
    return []


def parse(text: str) -> Expr:
    """Parse an expression (not yet type-checked: see ``check``). Raises :class:`ExpressionError`."""
    if not text.strip():
        raise ExpressionError("empty expression", 0)
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression is {len(text):,} characters long (the limit is {MAX_EXPRESSION_CHARS:,})", MAX_EXPRESSION_CHARS
        )
    return _Parser(text).parse()


#: an expression's length; an audience is typically one to five lines
MAX_EXPRESSION_CHARS = 10_000
#: operators and parentheses nested in one another; keeps every later (recursive) stage far from
#: Python's recursion limit
MAX_EXPRESSION_DEPTH = 100
_MAX_DEPTH = MAX_EXPRESSION_DEPTH
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_LITERAL_NAMES: dict[str, Value] = {"true": True, "false": False, "none": None}
_OTHER_OPERATORS = {
    ast.Mod: "operator '%'",
    ast.FloorDiv: "operator '//'",
    ast.Pow: "operator '**'",
    ast.MatMult: "operator '@'",
    ast.BitAnd: "operator '&' (use 'and')",
    ast.BitOr: "operator '|' (use 'or')",
    ast.BitXor: "operator '^'",
    ast.LShift: "operator '<<'",
    ast.RShift: "operator '>>'",
    ast.Invert: "operator '~' (use 'not')",
    ast.UAdd: "unary '+'",
}
_CONSTRUCTS: dict[type[ast.AST], str] = {
    ast.Subscript: "subscript ([...])",
    ast.Slice: "slice (a:b)",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment (:=)",
    ast.IfExp: "conditional (... if ... else ...)",
    ast.Dict: "dict ({...})",
    ast.Set: "set ({...})",
    ast.Tuple: "tuple (a, b)",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.List: "list outside 'in' ([...])",
}
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what Python's tokenizer counts as a line break


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        # The parentheses let an expression span lines (YAML block scalars) and start indented;
        # the text before them is one character, so offsets shift by one.
        self.wrapped = f"({text}\n)"
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(self.wrapped)]
        self.depth = 0

    # --- positions: Python's (line, column) in the wrapped text -> offset in the user's text ---

    def _clamp(self, index: int) -> int:
        return max(0, min(index - 1, len(self.text)))

    def at_char(self, lineno: int, col: int) -> int:
        return self._clamp(self.starts[lineno - 1] + col)

    def at_byte(self, lineno: int, col_bytes: int) -> int:
        start = self.starts[lineno - 1]
        line = self.wrapped[start : self.starts[lineno] if lineno < len(self.starts) else None]
        return self._clamp(start + len(line.encode()[:col_bytes].decode(errors="ignore")))

    def span(self, node: ast.expr | ast.keyword) -> tuple[int, int]:
        end_line, end_col = node.end_lineno or node.lineno, node.end_col_offset or node.col_offset
        return self.at_byte(node.lineno, node.col_offset), self.at_byte(end_line, end_col)

    def fail(self, message: str, node: ast.expr | ast.keyword) -> ExpressionError:
        return ExpressionError(message, self.span(node)[0])

    # --- the steps ---

    def parse(self) -> Expr:
        self._check_brackets()
        try:
            tree = ast.parse(self.wrapped, mode="eval")
        except SyntaxError as exc:
            offset = self.at_char(exc.lineno or 1, (exc.offset or 1) - 1)
            raise ExpressionError(f"expression syntax: {exc.msg}", offset) from None
        except ValueError as exc:  # null bytes
            raise ExpressionError(f"expression syntax: {exc}", 0) from None
        except (RecursionError, MemoryError):  # Python's own parser gives up on 3,000 nested 'not's
            raise ExpressionError(self._too_deep(), self._deepest_offset()) from None
        body = tree.body
        if isinstance(body, ast.Tuple) and not body.elts:  # only a comment
            raise ExpressionError("empty expression", 0)
        if body.lineno == 1 and body.col_offset == 0:  # the text closed our opening parenthesis
            raise ExpressionError("expression syntax: unmatched ')'", 0)
        self._refuse_private_names(tree)
        return self.convert(body)

    def _check_brackets(self) -> None:
        """Report an unmatched or unclosed bracket at its own place (Python would point at ours)."""
        starts = [0] + [m.end() for m in _NEWLINE.finditer(self.text)]
        stack: list[tokenize.TokenInfo] = []
        try:
            for tok in tokenize.generate_tokens(io.StringIO(self.text, newline="").readline):
                if tok.type == tokenize.ERRORTOKEN:  # e.g. an unterminated string: the parser says it better
                    return
                if tok.type == tokenize.OP and tok.string in ("(", "[", "{"):
                    stack.append(tok)
                elif tok.type == tokenize.OP and tok.string in (")", "]", "}"):
                    if not stack:
                        offset = starts[tok.start[0] - 1] + tok.start[1]
                        raise ExpressionError(f"expression syntax: unmatched '{tok.string}'", offset)
                    stack.pop()  # a closer of the wrong kind is left to Python's parser
        except (tokenize.TokenError, SyntaxError):
            pass  # the parser reports these properly
        if stack:
            tok = stack[-1]
            offset = starts[tok.start[0] - 1] + tok.start[1]
            raise ExpressionError(f"expression syntax: '{tok.string}' was never closed", offset)

    def _refuse_private_names(self, tree: ast.AST) -> None:
        """``_``-names are the way out of any sandbox: refuse them first, wherever they are."""
        found: list[tuple[int, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id.startswith("_"):
                found.append((self.span(node)[0], node.id))
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                found.append((self.span(node)[1] - len(node.attr), node.attr))
            elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_"):
                found.append((self.span(node)[0], node.arg))
        if found:
            offset, name = min(found)
            raise ExpressionError(f"disallowed name '{name}'", offset)

    def _too_deep(self) -> str:
        return (
            f"expression is nested too deeply (the limit is {MAX_EXPRESSION_DEPTH} levels of operators and parentheses)"
        )

    def _deepest_offset(self) -> int:
        """Where the nesting passes the limit: the operator or parenthesis that makes it too deep,
        roughly (Python's parser says nothing about where it gave up)."""
        tokens = re.finditer(r"\bnot\b|[-+*/(]", self.text)
        for count, found in enumerate(tokens, 1):
            if count > MAX_EXPRESSION_DEPTH:
                return found.start()
        return 0

    def convert(self, node: ast.expr) -> Expr:
        self.depth += 1
        try:
            if self.depth > _MAX_DEPTH:
                raise self.fail(self._too_deep(), node)
            return self._convert(node)
        finally:
            self.depth -= 1

    def _convert(self, node: ast.expr) -> Expr:
        start, end = self.span(node)
        src = self.text[start:end]
        match node:
            case ast.BoolOp(op=op, values=values):
                return BoolOp(start, src, "and" if isinstance(op, ast.And) else "or", [self.convert(v) for v in values])
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return Not(start, src, self.convert(operand))
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                inner = self.convert(operand)
                if isinstance(inner, Literal) and _is_number(inner.value):
                    return Literal(start, src, self._number(-inner.value, node))  # type: ignore[operator]
                return Neg(start, src, inner)
            case ast.BinOp(op=op, left=left, right=right) if type(op) in _ARITH:
                return Arith(start, src, _ARITH[type(op)], self.convert(left), self.convert(right))
            case ast.BinOp(op=op) | ast.UnaryOp(op=op):
                raise self.fail(f"not allowed in an expression: {_OTHER_OPERATORS[type(op)]}", node)
            case ast.Compare():
                return self._compare(node, start, src)
            case ast.Constant(value=value):
                return Literal(start, src, self._constant(value, node))
            case ast.Name(id=name) if name in _LITERAL_NAMES:  # True/False/None arrive as ast.Constant
                return Literal(start, src, _LITERAL_NAMES[name])
            case ast.Name(id=name):
                return Name(start, src, name)
            case ast.Attribute(value=value, attr=attr):
                return FieldRef(start, src, self.convert(value), attr)
            case ast.Call(func=func, args=args, keywords=keywords):
                if keywords:
                    raise self.fail("not allowed in an expression: keyword argument (name=value)", keywords[0])
                if not isinstance(func, ast.Name):
                    what = (
                        "method call (x.f(...))" if isinstance(func, ast.Attribute) else "call of a computed function"
                    )
                    raise self.fail(f"not allowed in an expression: {what}", node)
                return Call(start, src, func.id, [self.convert(a) for a in args])
        construct = _CONSTRUCTS.get(type(node), type(node).__name__.lower())
        raise self.fail(f"not allowed in an expression: {construct}", node)

    def _compare(self, node: ast.Compare, start: int, src: str) -> Compare:
        if len(node.ops) > 1:
            raise self.fail("chain comparisons with 'and'", node)
        op, left, right = node.ops[0], self.convert(node.left), node.comparators[0]
        if isinstance(op, ast.Is | ast.IsNot):
            converted = self.convert(right)
            if not (isinstance(converted, Literal) and converted.value is None):
                raise self.fail("'is' only tests for none: write 'x is none', or compare values with ==", node)
            return Compare(start, src, "is none" if isinstance(op, ast.Is) else "is not none", left, None)
        if isinstance(op, ast.In | ast.NotIn):
            word = "in" if isinstance(op, ast.In) else "not in"
            if not isinstance(right, ast.List):
                raise self.fail(f'\'{word}\' needs a list in square brackets, e.g. ["a", "b"]', right)
            return Compare(start, src, word, left, self._list(right))
        return Compare(start, src, _COMPARE[type(op)], left, self.convert(right))

    def _list(self, node: ast.List) -> ListLiteral:
        if not node.elts:
            raise self.fail("an empty list matches nothing", node)
        items: list[Literal] = []
        for elt in node.elts:
            item = self.convert(elt)
            if not isinstance(item, Literal):
                raise self.fail("list items must be written-out values (numbers, text, true, false)", elt)
            if item.value is None:
                raise self.fail("use 'is none' to test for a missing value", elt)
            items.append(item)
        start, end = self.span(node)
        return ListLiteral(start, self.text[start:end], items)

    def _constant(self, value: object, node: ast.expr) -> Value:
        if isinstance(value, str):
            return self._text(value, node)
        if value is None or isinstance(value, bool):
            return value
        if _is_number(value):
            return self._number(value, node)  # type: ignore[arg-type]
        kind = {bytes: "bytes", complex: "imaginary number"}.get(type(value), type(value).__name__)
        raise self.fail(f"not allowed in an expression: {kind} literal", node)

    def _text(self, value: str, node: ast.expr) -> str:
        """Text both databases can hold: PostgreSQL refuses NUL in text, and an unpaired surrogate
        is not UTF-8 at all; found here, not in every tick that would run the expression."""
        for index, ch in enumerate(value):
            if ch == "\0" or "\ud800" <= ch <= "\udfff":
                what = "a NUL character (\\0)" if ch == "\0" else f"an unpaired surrogate (\\u{ord(ch):04x})"
                raise ExpressionError(
                    f"text holds {what} at character {index + 1}, which the databases cannot store",
                    self.span(node)[0],
                )
        return value

    def _number(self, value: int | float, node: ast.expr) -> int | float:
        # both databases must hold it: 64-bit integers, finite floats
        if (isinstance(value, int) and not -(2**63) <= value < 2**63) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            start, end = self.span(node)
            raise ExpressionError(f"number too large: {self.text[start:end]}", start)
        return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
