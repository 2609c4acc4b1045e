"""Host patterns: ``crawl[01-40].example.org`` expanded, and folded back.

A pattern is a host name with number ranges in brackets; commas outside
the brackets separate patterns, and a ``:PORT`` suffix stays on every
name::

    >>> expand("crawl[01-03].example.org")
    ['crawl01.example.org', 'crawl02.example.org', 'crawl03.example.org']
    >>> expand("r[1-2]n[1-2]:2200,spare1")
    ['r1n1:2200', 'r1n2:2200', 'r2n1:2200', 'r2n2:2200', 'spare1']
    >>> fold(["n1", "n2", "n3", "n7", "n10", "spare"])
    'n[1-3,7,10],spare'
    >>> fold_count(["crawl01", "crawl02", "crawl03", "crawl12"])
    'crawl[01-03,12] (4)'

A range keeps the zero padding of its first bound (``[08-10]`` gives
08, 09, 10). ``fold`` is the inverse for display: ``expand(fold(names))``
gives each name once, in ``sort_key`` order.
"""

import itertools
import re

from drover.errors import HostPatternError

# More names than this from one pattern is a slip of the keyboard
# ("[1-1000000]"), not a cluster; refusing it early saves the memory.
MAX_NAMES = 100_000

# A host name becomes a directory name on every host (docs/internals.md,
# "Records") and an ssh argument, where a leading "-" would be read as an
# option: letters, digits, ".", "-" and "_", with neither "." nor "-" first.
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_DIGITS = re.compile(r"[0-9]+")
_NUMBER_FIELD = re.compile(r"([0-9]+)")


def expand(pattern):
    """Every host name of `pattern`, in order, each once."""
    names = []
    for item in split_patterns(pattern):
        names.extend(_expand_item(item, pattern, MAX_NAMES - len(names)))
    return list(dict.fromkeys(names))


def expand_all(patterns):
    """The names of several patterns, each once, first occurrence first."""
    names = {}
    for pattern in patterns:
        names.update(dict.fromkeys(expand(pattern)))
    return list(names)


def split_patterns(text):
    """The patterns of ``a[1-3],b``: commas inside brackets stay put."""
    items = []
    start = 0
    opened = None
    for position, char in enumerate(text):
        if char == "[":
            if opened is not None:
                _fail(text, f'"[" inside "[...]" at column {position + 1}')
            opened = position
        elif char == "]":
            if opened is None:
                _fail(text, f'"]" without "[" at column {position + 1}')
            opened = None
        elif char == "," and opened is None:
            items.append(text[start:position])
            start = position + 1
    if opened is not None:
        _fail(text, f'no "]" closes the "[" at column {opened + 1}')
    items.append(text[start:])

    items = [item.strip() for item in items]
    if not any(items):
        _fail(text, "no host name")
    if not all(items):
        _fail(text, "empty name between commas")
    return items


def fold(names):
    """A short pattern naming `names`, as ``crawl[01-07,12]``.

    Names that differ in one number are folded into a range, one field
    at a time; what cannot fold is listed with commas. The order is
    ``sort_key`` order, so equal sets of names always fold alike.
    """
    patterns = [_fields(name) for name in sorted(set(names), key=sort_key)]

    # Each sweep folds neighbours that differ in one field; a second one
    # folds rows of ranges (r1n[1-8],r2n[1-8] -> r[1-2]n[1-8]).
    while True:
        merged = _merge_neighbours(patterns)
        if len(merged) == len(patterns):
            break
        patterns = merged

    return ",".join(_pattern_text(pattern) for pattern in patterns)


def fold_count(names):
    """``fold(names)`` with the number of distinct names: ``n[1-3] (3)``."""
    distinct = set(names)
    return f"{fold(distinct)} ({len(distinct)})"


def sort_key(name):
    """Names of one shape together, numbers by value: ``n2`` before ``n10``.

    The shape is the text around the numbers, so ``crawl40.a.org`` comes
    before ``crawl01.b.org``, and each data centre folds into one range.
    """
    parts = _NUMBER_FIELD.split(name)
    numbers = tuple((int(part), len(part)) for part in parts[1::2])
    return tuple(parts[0::2]), numbers


def _fail(pattern, fault):
    raise HostPatternError(f'bad host pattern "{pattern}": {fault}')


def _expand_item(item, pattern, room):
    """The names of one comma-free pattern; at most `room` of them."""
    pieces = re.split(r"(\[[^\]]*\])", item)
    groups = [_ranges(piece[1:-1], pattern) for piece in pieces[1::2]]

    size = 1
    for ranges in groups:
        size *= sum(high - low + 1 for low, high, _ in ranges)
    if size > room:
        total = size + MAX_NAMES - room
        _fail(pattern, f"{total} names, more than the {MAX_NAMES} allowed")

    fields = [[piece] if index % 2 == 0 else _numbers(groups[index // 2])
              for index, piece in enumerate(pieces)]
    names = ["".join(parts) for parts in itertools.product(*fields)]
    for name in names:
        _check_name(name, pattern)
    return names


def _ranges(body, pattern):
    """The ranges of ``01-07,12`` as (low, high, padding width)."""
    if not body.strip():
        _fail(pattern, 'empty range "[]"')
    ranges = []
    for piece in body.split(","):
        first, dash, last = (part.strip() for part in piece.partition("-"))
        if not dash:
            last = first
        if not (_DIGITS.fullmatch(first) and _DIGITS.fullmatch(last)):
            _fail(pattern, f'not a number range: "{piece.strip()}"')
        if int(last) < int(first):
            _fail(pattern, f'reversed range "{piece.strip()}"')

        width = len(first) if _padded(first) else 0
        if _padded(last) and len(last) != len(first):
            _fail(pattern, f'padding differs in "{piece.strip()}"')
        ranges.append((int(first), int(last), width))
    return ranges


def _numbers(ranges):
    """Every number of the ranges as text, padded to its range's width."""
    return [str(number).zfill(width)
            for low, high, width in ranges
            for number in range(low, high + 1)]


def _padded(number_text):
    return len(number_text) > 1 and number_text.startswith("0")


def _check_name(name, pattern):
    """Refuse a name ssh or a directory could misread."""
    host, colon, port = name.partition(":")
    if ":" in port:
        _fail(pattern, f'"{name}" has more than one ":" (IPv6 addresses '
                       "are not supported; name them in ~/.ssh/config)")
    if colon and not (_DIGITS.fullmatch(port) and 0 < int(port) < 65536):
        _fail(pattern, f'"{port}" is not a port number (1-65535)')
    if not _HOST_NAME.fullmatch(host):
        _fail(pattern, f'"{host}" is not a host name (letters, digits, '
                       '".", "-" and "_", not starting with "." or "-")')


def _fields(name):
    """A name as alternate text and number fields, each number a tuple."""
    parts = _NUMBER_FIELD.split(name)
    return tuple(
        (part,) if index % 2 else part for index, part in enumerate(parts))


def _merge_neighbours(patterns):
    """One sweep: each pattern merged into the one before it if it can."""
    merged = []
    for pattern in patterns:
        folded = merged and _merge(merged[-1], pattern)
        if folded:
            merged[-1] = folded
        else:
            merged.append(pattern)
    return merged


def _merge(first, second):
    """The pattern naming both, when they differ in one number field.

    Both come from names in ``sort_key`` order, so every value of the
    first is below every value of the second, and the merged pattern
    expands to the first's names, then the second's.
    """
    if len(first) != len(second):
        return None
    differ = [index for index, (one, other) in enumerate(zip(first, second))
              if one != other]
    if len(differ) != 1 or differ[0] % 2 == 0:
        return None
    index = differ[0]
    return first[:index] + (first[index] + second[index],) + first[index + 1:]


def _pattern_text(pattern):
    return "".join(
        _range_text(field) if index % 2 else field
        for index, field in enumerate(pattern))


def _range_text(numbers):
    """``01-07,12`` from ("01", ..., "07", "12"); one value stays bare."""
    if len(numbers) == 1:
        return numbers[0]

    # A run goes on while the next text is the next number at the run's
    # padding: "08","09","10" is one run, "9","010" two.
    runs = []
    for text in numbers:
        if runs:
            first, last = runs[-1]
            width = len(first) if _padded(first) else 0
            if text == str(int(last) + 1).zfill(width):
                runs[-1][1] = text
                continue
        runs.append([text, text])

    items = (first if first == last else f"{first}-{last}"
             for first, last in runs)
    return "[" + ",".join(items) + "]"
