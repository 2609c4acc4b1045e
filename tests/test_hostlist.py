"""Host patterns: expansion, its errors, and folding back for display."""

import doctest
import random
import time

import pytest

from drover import hostlist
from drover.errors import HostPatternError
from drover.hostlist import expand, expand_all, fold, fold_count, sort_key


def test_module_examples_hold():
    assert doctest.testmod(hostlist).failed == 0


# -- expand -------------------------------------------------------------------

def test_range_keeps_its_zero_padding():
    names = expand("crawl[01-40].example.org")

    assert len(names) == 40
    assert names[:2] == ["crawl01.example.org", "crawl02.example.org"]
    assert names[-1] == "crawl40.example.org"


def test_numbers_and_ranges_mix_in_one_bracket():
    assert expand("node[1-3,7,10-12]") == [
        "node1", "node2", "node3", "node7", "node10", "node11", "node12"]


def test_padding_widens_when_the_numbers_outgrow_it():
    assert expand("n[098-101]") == ["n098", "n099", "n100", "n101"]
    assert expand("n[8-10]") == ["n8", "n9", "n10"]


def test_several_brackets_expand_as_a_product_leftmost_slowest():
    assert expand("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]


def test_port_suffix_stays_on_every_name():
    assert expand("spare1:2222") == ["spare1:2222"]
    assert expand("web[1-2]:2200") == ["web1:2200", "web2:2200"]
    assert expand("localhost:[2201-2203]") == [
        "localhost:2201", "localhost:2202", "localhost:2203"]


def test_a_plain_name_is_its_own_pattern():
    assert expand("localhost") == ["localhost"]
    assert expand("10.0.0.7") == ["10.0.0.7"]


def test_commas_outside_brackets_separate_patterns():
    assert hostlist.split_patterns("a[1-2,5],b , c:22") == [
        "a[1-2,5]", "b", "c:22"]
    assert expand("a[1-2],b") == ["a1", "a2", "b"]


def test_spaces_inside_brackets_are_ignored():
    assert expand("n[1 - 2, 4]") == ["n1", "n2", "n4"]


def test_expand_gives_each_name_once():
    assert expand("n[1-3],n2,n[2-4]") == ["n1", "n2", "n3", "n4"]


def test_expand_all_keeps_the_first_occurrence_order():
    assert expand_all(["b[1-2]", "a", "b1", "a,c"]) == ["b1", "b2", "a", "c"]


@pytest.mark.parametrize("pattern, fault", [
    ("crawl[01-40.example.org", 'no "]" closes the "["'),
    ("crawl01-40].example.org", '"]" without "["'),
    ("n[[1-2]]", '"[" inside "[...]"'),
    ("n[]", 'empty range "[]"'),
    ("n[ ]", 'empty range "[]"'),
    ("n[5-1]", 'reversed range "5-1"'),
    ("n[a-c]", 'not a number range: "a-c"'),
    ("n[1-]", 'not a number range: "1-"'),
    ("n[1,,3]", 'not a number range: ""'),
    ("n[1-2-3]", 'not a number range: "1-2-3"'),
    ("n[1-010]", 'padding differs in "1-010"'),
    ("n[1-200000]", "200000 names, more than the 100000 allowed"),
    ("a[1-400]b[1-400]", "160000 names, more than the 100000 allowed"),
    ("n[1-60000],m[1-60000]", "120000 names, more than the 100000 allowed"),
    ("web1:ssh", '"ssh" is not a port number'),
    ("web1:70000", '"70000" is not a port number'),
    ("web1:", '"" is not a port number'),
    ("fe80::1", "more than one"),
    ("-oProxyCommand=x", '"-oProxyCommand=x" is not a host name'),
    ("..", '".." is not a host name'),
    ("user@web1", '"user@web1" is not a host name'),
    ("web 1", '"web 1" is not a host name'),
    ("crawl\u00e91", "is not a host name"),
    ("a,,b", "empty name between commas"),
    ("", "no host name"),
    (" , ", "no host name"),
])
def test_bad_pattern_names_the_pattern_and_the_fault(pattern, fault):
    with pytest.raises(HostPatternError) as raised:
        expand(pattern)

    message = str(raised.value)
    assert message.startswith(f'bad host pattern "{pattern}": ')
    assert fault in message


def test_an_absurd_range_is_refused_before_it_is_built():
    started = time.monotonic()

    with pytest.raises(HostPatternError):
        expand("n[1-999999999999]")

    assert time.monotonic() - started < 1


def test_the_largest_allowed_pattern_expands():
    assert len(expand(f"n[1-{hostlist.MAX_NAMES}]")) == hostlist.MAX_NAMES


# -- fold ---------------------------------------------------------------------

def test_fold_keeps_padding_and_lists_gaps():
    names = expand("crawl[01-07,12].example.org")

    assert fold(names) == "crawl[01-07,12].example.org"


def test_fold_joins_unpadded_numbers_of_any_length():
    assert fold(expand("n[1-9]") + expand("n[10-12]")) == "n[1-12]"


def test_fold_keeps_padded_numbers_padded():
    assert fold(expand("n[01-12]")) == "n[01-12]"
    assert fold(["n08", "n09", "n10"]) == "n[08-10]"


def test_fold_keeps_padding_widths_apart():
    assert fold(["n1", "n01", "n2", "n02"]) == "n[1,01,2,02]"
    assert fold(["n9", "n010"]) == "n[9,010]"


def test_fold_lists_what_differs_in_more_than_a_number():
    assert fold(["web1", "db1", "spare"]) == "db1,spare,web1"


def test_fold_folds_rows_of_ranges():
    assert fold(expand("r[1-4]n[1-8]")) == "r[1-4]n[1-8]"
    assert fold(expand("r[1-2]n[1-3],r3n[1-2]")) == "r[1-2]n[1-3],r3n[1-2]"


def test_fold_keeps_ports_with_their_names():
    assert fold(["web2:2200", "web1:2200", "spare1:2222", "web1"]) == (
        "spare1:2222,web1,web[1-2]:2200")
    assert fold(["localhost:2202", "localhost:2201"]) == (
        "localhost:[2201-2202]")


def test_fold_is_the_same_whatever_the_input_order():
    names = expand("crawl[01-40].example.org,spare[1-3],web1:22")
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)

    assert fold(shuffled) == fold(names) == fold(names + names)


def test_fold_of_nothing_is_empty():
    assert fold([]) == ""


def test_fold_count_counts_distinct_names():
    names = expand("crawl[01-07,12]") + ["crawl03"]

    assert fold_count(names) == "crawl[01-07,12] (8)"


def test_sort_key_orders_numbers_by_value():
    names = ["n10", "n9", "n01", "n1", "m2"]

    assert sorted(names, key=sort_key) == ["m2", "n1", "n01", "n9", "n10"]


def test_sort_key_keeps_names_of_one_shape_together():
    names = ["crawl01.b.org", "crawl02.a.org", "crawl01.a.org", "n1:22", "n2"]

    assert sorted(names, key=sort_key) == [
        "crawl01.a.org", "crawl02.a.org", "crawl01.b.org", "n2", "n1:22"]


def test_fold_folds_each_domain_into_its_own_range():
    names = expand("crawl[01-40].a.org,crawl[01-40].b.org")
    random.Random(3).shuffle(names)

    assert fold(names) == "crawl[01-40].a.org,crawl[01-40].b.org"


def _random_names(rng):
    """Names shaped like real inventories, with traps mixed in."""
    prefixes = ["crawl", "web", "r", "db-", "node", "x1y"]
    suffixes = ["", ".example.org", ".dc2.example.org", "n", "-b"]
    names = []
    for _ in range(rng.randint(0, 60)):
        name = rng.choice(prefixes)
        number = rng.randint(0, 130)
        width = rng.choice([0, 0, 2, 3])
        name += str(number).zfill(width)
        suffix = rng.choice(suffixes)
        if suffix == "n":
            suffix += str(rng.randint(1, 4))
        name += suffix
        if rng.random() < 0.1:
            name += ":" + str(rng.choice([22, 2200, 2201]))
        names.append(name)
    return names


@pytest.mark.parametrize("seed", range(300))
def test_expanding_a_fold_gives_the_names_back_in_order(seed):
    names = _random_names(random.Random(seed))

    folded = fold(names)

    assert expand_all([folded] if folded else []) == sorted(
        set(names), key=sort_key)


@pytest.mark.parametrize("seed", range(50))
def test_a_fold_of_dense_ranges_is_short(seed):
    rng = random.Random(seed)
    low = rng.randint(0, 50)
    pattern = f"crawl[{low:02d}-{low + rng.randint(1, 60):02d}].example.org"

    assert fold(expand(pattern)) == pattern
